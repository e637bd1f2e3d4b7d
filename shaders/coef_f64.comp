#version 450
#define F64 1
#include "coef.glsl"
