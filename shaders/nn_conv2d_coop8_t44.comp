#version 450
// nn_conv2d_coop8.comp with 4 x 4 accumulators per subgroup (a 64 x 64 tile) and the
// plain staging: CCFG_VULKAN_COOP_TILE=4x4, read the body
#define CM 8
#define CN 8
#define CK 8
#define SG 8
#define FM 4
#define FN 4
#include "nn_conv2d_coop.glsl"
