#version 450
// nn_conv2d_coop.comp with 4 x 4 accumulators per subgroup (a 128 x 128 tile), the
// packed staging (COOP_PACKED) and padded shared-memory rows (COOP_PAD):
// CCFG_VULKAN_COOP_TILE=4x4pp, read the body
#define CM 16
#define CN 16
#define CK 16
#define SG 32
#define FM 4
#define FN 4
#define COOP_PACKED
#define COOP_PAD
#include "nn_conv2d_coop.glsl"
