#version 450
// nn_conv2d_coop.glsl on 16 x 16 x 16 cooperative matrices in subgroups of 32 (NVIDIA tensor
// cores; read the body). Not yet run on any device.
#define CM 16
#define CN 16
#define CK 16
#define SG 32
#include "nn_conv2d_coop.glsl"
