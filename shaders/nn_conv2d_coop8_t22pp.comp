#version 450
// nn_conv2d_coop8.comp with 2 x 2 accumulators per subgroup (a 32 x 32 tile), the
// packed staging (COOP_PACKED) and padded shared-memory rows (COOP_PAD):
// CCFG_VULKAN_COOP_TILE=2x2pp, read the body
#define CM 8
#define CN 8
#define CK 8
#define SG 8
#define FM 2
#define FN 2
#define COOP_PACKED
#define COOP_PAD
#include "nn_conv2d_coop.glsl"
