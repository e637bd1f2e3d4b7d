#version 450
// nn_conv2d_coop8.comp with 2 x 4 accumulators per subgroup (a 32 x 64 tile) and the
// packed staging (COOP_PACKED): CCFG_VULKAN_COOP_TILE=2x4p, read the body
#define CM 8
#define CN 8
#define CK 8
#define SG 8
#define FM 2
#define FN 4
#define COOP_PACKED
#include "nn_conv2d_coop.glsl"
