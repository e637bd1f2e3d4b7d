#version 450
// nn_conv2d.glsl with 64 x 128 tiles, double-buffered stages (one barrier per stage):
// CCFG_VULKAN_CONV_TILE=64x128db, read the body
#define TILE_BM 64
#define CONV_DOUBLE_BUFFER
#include "nn_conv2d.glsl"
