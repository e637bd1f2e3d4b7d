#version 450
#include "gmm_eps.glsl"
