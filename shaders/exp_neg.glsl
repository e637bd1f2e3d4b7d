// exp_neg(v) = e^v for v <= 0, in REAL (real.glsl first). GLSL has exp for float only: the F64
// variant is our own, to ~1e-16 relative: v = n ln2 + r (fdlibm's split of ln2), |r| <= ln2/2,
// e^r = sum_{q <= 14} r^q / q! by Horner's rule with the constants 1 / q! (not the nested
// 1 + r t / q: a double division is a sequence of about 30 instructions on GPUs, and those 14
// divisions were most of the 2-D mixture's per-row arithmetic and of coef's table stage); below
// -700 it returns 0 (e^-700 ~ 1e-304: past that the scale 2^n would leave the normal doubles).
// NaN stays NaN (r is NaN). (shared by coef.glsl and gmm_eps.glsl)
#ifdef F64
double exp_neg(double v)
{
    if (v < -700.0lf) return 0.0lf;
    const double n = floor(v * 1.4426950408889634lf + 0.5lf);
    const double r = (v - n * 6.93147180369123816490e-01lf) - n * 1.90821492927058770002e-10lf;
    double t = 1.1470745597729725e-11lf;    // 1 / 14!
    t = t * r + 1.6059043836821613e-10lf;   // 1 / 13!
    t = t * r + 2.08767569878681e-09lf;
    t = t * r + 2.505210838544172e-08lf;
    t = t * r + 2.755731922398589e-07lf;
    t = t * r + 2.7557319223985893e-06lf;
    t = t * r + 2.48015873015873e-05lf;
    t = t * r + 0.0001984126984126984lf;
    t = t * r + 0.001388888888888889lf;
    t = t * r + 0.008333333333333333lf;
    t = t * r + 0.041666666666666664lf;
    t = t * r + 0.16666666666666666lf;
    t = t * r + 0.5lf;
    t = t * r + 1.0lf;
    t = t * r + 1.0lf;                      // 1 / 0!
    return t * packDouble2x32(uvec2(0u, uint(int(n) + 1023) << 20));
}
#else
float exp_neg(float v) { return exp(v); }
#endif
