#version 450
// nn_conv2d_coop.comp with 2 x 4 accumulators per subgroup (a 64 x 128 tile) and the
// packed staging (COOP_PACKED): CCFG_VULKAN_COOP_TILE=2x4p, read the body
#define CM 16
#define CN 16
#define CK 16
#define SG 32
#define FM 2
#define FN 4
#define COOP_PACKED
#include "nn_conv2d_coop.glsl"
