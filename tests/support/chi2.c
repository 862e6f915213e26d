/* Chi-square survival function via the regularized incomplete gamma function. */
#include <math.h>

#include "chi2.h"

/* Regularized lower incomplete gamma P(a, x) by its series (x < a + 1). */
static double gamma_p_series(double a, double x)
{
    double term = 1.0 / a, sum = term;
    for (int n = 1; n < 10000 && fabs(term) > fabs(sum) * 1e-16; n++) {
        term *= x / (a + n);
        sum += term;
    }
    return sum * exp(-x + a * log(x) - lgamma(a));
}

/* Regularized upper incomplete gamma Q(a, x) by its continued fraction (x >= a + 1),
 * modified Lentz. */
static double gamma_q_fraction(double a, double x)
{
    const double tiny = 1e-300;
    double b = x + 1.0 - a, c = 1.0 / tiny, d = 1.0 / b, h = d;
    for (int i = 1; i < 10000; i++) {
        double an = -i * (i - a);
        b += 2.0;
        d = an * d + b;
        d = fabs(d) < tiny ? tiny : d;
        c = b + an / c;
        c = fabs(c) < tiny ? tiny : c;
        d = 1.0 / d;
        double delta = d * c;
        h *= delta;
        if (fabs(delta - 1.0) < 1e-16)
            break;
    }
    return exp(-x + a * log(x) - lgamma(a)) * h;
}

/* P(X > x) for X ~ chi-square(df) = Q(df / 2, x / 2). */
double sd_test_chi2_sf(double x, int df)
{
    double a = df / 2.0, h = x / 2.0;
    if (h <= 0.0)
        return 1.0;
    return h < a + 1.0 ? 1.0 - gamma_p_series(a, h) : gamma_q_fraction(a, h);
}

double sd_test_chi2_gof(const long *counts, const double *expect, int n_cells, long n, int *df,
                        double *stat)
{
    double x2 = 0.0, pool_e = 0.0, pool_o = 0.0;
    int bins = 0;
    for (int c = 0; c < n_cells; c++) {
        double e = expect[c] * (double)n;
        if (e == 0.0 && counts[c] > 0) {
            *df = 0;
            *stat = INFINITY;
            return 0.0;
        }
        if (e >= 5.0) {
            x2 += (counts[c] - e) * (counts[c] - e) / e;
            bins++;
        } else {
            pool_e += e;
            pool_o += (double)counts[c];
        }
    }
    if (pool_e > 0.0) {
        x2 += (pool_o - pool_e) * (pool_o - pool_e) / pool_e;
        bins++;
    }
    *df = bins - 1;
    *stat = x2;
    return sd_test_chi2_sf(x2, bins - 1);
}
