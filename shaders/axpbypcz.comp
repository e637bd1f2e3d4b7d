#version 450
#include "axpbypcz.glsl"
