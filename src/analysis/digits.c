/* digits.c -- how many significant digits a value keeps across repeated
 * runs: the two estimators of Sohier et al., "Confidence intervals for
 * stochastic arithmetic" (ACM TOMS 47(2), 2021), in base 10. The formulas
 * are in docs/compare.md. */
#include "cs_analysis.h"

#include <float.h>
#include <math.h>

/* ---- distributions ---------------------------------------------------------- */

/* The standard normal quantile: Newton's method on erfc, from a start
 * that the tails' asymptote gives. Accurate to ~1e-12 for p in (0, 1). */
double
cs_norm_quantile(double p)
{
    if (!(p > 0 && p < 1))
        return p <= 0 ? -INFINITY : INFINITY;
    double q = p < 0.5 ? p : 1 - p;
    double t = sqrt(-2 * log(q));
    double x = t - (2.515517 + 0.802853 * t + 0.010328 * t * t) /
                       (1 + 1.432788 * t + 0.189269 * t * t + 0.001308 * t * t * t);
    if (p < 0.5)
        x = -x;
    for (int i = 0; i < 50; i++) {
        double cdf = 0.5 * erfc(-x / M_SQRT2);
        double pdf = exp(-0.5 * x * x) / sqrt(2 * M_PI);
        if (pdf <= 0)
            break;
        double step = (cdf - p) / pdf;
        x -= step;
        if (fabs(step) < 1e-14 * (1 + fabs(x)))
            break;
    }
    return x;
}

/* The regularised lower incomplete gamma function P(a, x): its series
 * below a + 1, its continued fraction (modified Lentz) above. */
static double
gamma_p(double a, double x)
{
    if (x <= 0)
        return 0;
    double lg = lgamma(a);
    if (x < a + 1) {
        double sum = 1 / a, term = sum;
        for (int n = 1; n < 1000; n++) {
            term *= x / (a + n);
            sum += term;
            if (fabs(term) < fabs(sum) * 1e-16)
                break;
        }
        return sum * exp(-x + a * log(x) - lg);
    }
    double tiny = 1e-300, b = x + 1 - a, c = 1 / tiny, d = 1 / b, h = d;
    for (int i = 1; i < 1000; i++) {
        double an = -i * (i - a);
        b += 2;
        d = an * d + b;
        if (fabs(d) < tiny)
            d = tiny;
        c = b + an / c;
        if (fabs(c) < tiny)
            c = tiny;
        d = 1 / d;
        double del = d * c;
        h *= del;
        if (fabs(del - 1) < 1e-16)
            break;
    }
    return 1 - exp(-x + a * log(x) - lg) * h;
}

/* The chi-square quantile with `dof` degrees of freedom: bisection on
 * its distribution function P(dof/2, x/2). */
double
cs_chi2_quantile(double p, double dof)
{
    if (!(p > 0 && p < 1) || dof <= 0)
        return NAN;
    double lo = 0, hi = dof + 10 * sqrt(2 * dof) + 10;
    while (gamma_p(dof / 2, hi / 2) < p)
        hi *= 2;
    for (int i = 0; i < 200 && hi - lo > 1e-13 * hi; i++) {
        double mid = 0.5 * (lo + hi);
        if (gamma_p(dof / 2, mid / 2) < p)
            lo = mid;
        else
            hi = mid;
    }
    return 0.5 * (lo + hi);
}

/* ---- the estimators ------------------------------------------------------------ */

int
cs_digits_prepare(cs_digits_ctx *c, int method, double confidence, double probability,
                  size_t n)
{
    if (method != CS_DIGITS_CNH && method != CS_DIGITS_GENERAL)
        return CS_EINVAL;
    if (!(confidence > 0 && confidence < 1) || !(probability > 0 && probability < 1) || n < 2)
        return CS_EINVAL;
    c->method = method;
    c->confidence = confidence;
    c->probability = probability;
    c->n = n;
    /* CNH: with confidence `confidence`, the true standard deviation is at
     * most sqrt((n-1) / chi2_{(1-c)/2}) times the sample's; and a centred
     * normal error stays within F^-1((p+1)/2) standard deviations with
     * probability p. Both shorten the digits by a constant. */
    double chi2 = cs_chi2_quantile((1 - confidence) / 2, (double)(n - 1));
    c->cnh_delta = 0.5 * log10((double)(n - 1) / chi2) + log10(cs_norm_quantile((probability + 1) / 2));
    /* General: n samples that all agree to s digits show, with confidence
     * c, that a new sample does with probability at least (1-c)^(1/n). */
    c->general_probability = pow(1 - confidence, 1.0 / (double)n);
    c->general_runs_needed = (size_t)ceil(log(1 - confidence) / log(probability));
    return CS_OK;
}

double
cs_digits_of(const cs_digits_ctx *c, const double *re, const double *im, size_t stride,
             double max_digits)
{
    size_t n = c->n;
    double mr = 0, mi = 0;
    int same = 1;
    for (size_t i = 0; i < n; i++) {
        double r = re[i * stride], m = im ? im[i * stride] : 0;
        if (r != r || m != m)
            return 0; /* a NaN anywhere: no digit can be trusted */
        mr += r;
        mi += m;
        if (r != re[0] || (im && m != im[0]))
            same = 0;
    }
    if (same)
        return max_digits; /* identical in every run: every digit holds */
    mr /= (double)n;
    mi /= (double)n;
    double mod = hypot(mr, mi);
    if (mod == 0 || !isfinite(mod))
        return 0; /* the runs disagree around zero (or overflow): no digit */
    double s;
    if (c->method == CS_DIGITS_CNH) {
        double ss = 0;
        for (size_t i = 0; i < n; i++) {
            double dr = re[i * stride] - mr, di = im ? im[i * stride] - mi : 0;
            ss += dr * dr + di * di;
        }
        double sd = sqrt(ss / (double)(n - 1));
        s = -log10(sd / mod) - c->cnh_delta;
    } else {
        double worst = 0;
        for (size_t i = 0; i < n; i++) {
            double dr = re[i * stride] - mr, di = im ? im[i * stride] - mi : 0;
            double e = hypot(dr, di);
            if (e > worst)
                worst = e;
        }
        s = -log10(worst / mod);
    }
    if (!(s > 0))
        return 0;
    return s < max_digits ? s : max_digits;
}
