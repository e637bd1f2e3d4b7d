// exp_neg(v) = e^v for v <= 0, in REAL (real.glsl first). GLSL has exp for float only: the F64
// variant is our own, to ~1e-16 relative: v = n ln2 + r (fdlibm's split of ln2), |r| <= ln2/2,
// e^r = 1 + r (1 + r/2 (1 + r/3 (...))) to r^14; below -700 it returns 0 (e^-700 ~ 1e-304: past
// that the scale 2^n would leave the normal doubles). NaN stays NaN (r is NaN).
// (shared by coef.glsl and gmm_eps.glsl)
#ifdef F64
double exp_neg(double v)
{
    if (v < -700.0lf) return 0.0lf;
    const double n = floor(v * 1.4426950408889634lf + 0.5lf);
    const double r = (v - n * 6.93147180369123816490e-01lf) - n * 1.90821492927058770002e-10lf;
    double t = 1.0lf;
    for (int q = 14; q >= 1; q--) t = 1.0lf + r * t / double(q);
    return t * packDouble2x32(uvec2(0u, uint(int(n) + 1023) << 20));
}
#else
float exp_neg(float v) { return exp(v); }
#endif
