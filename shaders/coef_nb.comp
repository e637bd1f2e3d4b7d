#version 450
#define COEF_NO_BARRIER 1
#include "coef.glsl"
