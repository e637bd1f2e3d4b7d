#version 450
// nn_conv2d.glsl's default variant (read the body): 64 x 128 tiles, 128 invocations, one
// shared-memory stage and two barriers per stage. CCFG_VULKAN_CONV_TILE unset or 64x128.
#include "nn_conv2d.glsl"
