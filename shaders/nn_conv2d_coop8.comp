#version 450
// nn_conv2d_coop.glsl on 8 x 8 x 8 cooperative matrices in subgroups of 8 (Mesa lavapipe >= 26;
// read the body)
#define CM 8
#define CN 8
#define CK 8
#define SG 8
#include "nn_conv2d_coop.glsl"
