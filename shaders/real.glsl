// REAL: the arithmetic type of the *_f64 shader variants (double) and the plain ones (float).
// The host passes every coefficient twice, as float and as the bits of a double (uvec2), and
// picks the f64 pipeline where the device has shaderFloat64 (backend_vk.c): then the shaders do
// the CPU backend's double arithmetic with one rounding at the end.
#ifdef F64
#define REAL double
#define COEF(f, d) packDouble2x32(d)
#else
#define REAL float
#define COEF(f, d) (f)
#endif
