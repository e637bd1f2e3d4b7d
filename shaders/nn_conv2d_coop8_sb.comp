#version 450
// nn_conv2d_coop8.comp with one shared-memory stage (COOP_SINGLE_BUFFER: the path before double
// buffering, CCFG_VULKAN_COOP_SINGLE_BUFFER=1; read the body)
#define COOP_SINGLE_BUFFER
#define CM 8
#define CN 8
#define CK 8
#define SG 8
#include "nn_conv2d_coop.glsl"
