#version 450
#define F64 1
#define COEF_NO_BARRIER 1
#include "coef.glsl"
