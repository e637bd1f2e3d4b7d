#version 450
// nn_conv2d.glsl with 128 x 128 tiles (256 invocations), double-buffered stages:
// CCFG_VULKAN_CONV_TILE=128x128db, read the body
#define TILE_BM 128
#define CONV_DOUBLE_BUFFER
#include "nn_conv2d.glsl"
