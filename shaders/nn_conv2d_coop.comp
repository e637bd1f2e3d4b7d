#version 450
// nn_conv2d_coop.glsl on 16 x 16 x 16 cooperative matrices (read it)
#define CM 16u
#define CN 16u
#define CK 16u
#include "nn_conv2d_coop.glsl"
