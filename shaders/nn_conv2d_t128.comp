#version 450
// nn_conv2d.glsl with 128 x 128 tiles (256 invocations), one shared-memory stage:
// CCFG_VULKAN_CONV_TILE=128x128, read the body
#define TILE_BM 128
#include "nn_conv2d.glsl"
