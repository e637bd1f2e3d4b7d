#version 450
// nn_conv2d_coop.comp with one shared-memory stage (COOP_SINGLE_BUFFER: the path before double
// buffering, CCFG_VULKAN_COOP_SINGLE_BUFFER=1; read the body)
#define COOP_SINGLE_BUFFER
#define CM 16
#define CN 16
#define CK 16
#define SG 32
#include "nn_conv2d_coop.glsl"
