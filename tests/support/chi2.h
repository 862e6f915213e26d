/* Chi-square survival function for the distribution tests. */
#ifndef SPECDEC_TESTS_CHI2_H
#define SPECDEC_TESTS_CHI2_H

/* P(X > x) for X ~ chi-square(df) = Q(df / 2, x / 2), to ~1e-12 relative. */
double sd_test_chi2_sf(double x, int df);

/* Pearson goodness of fit of counts[n_cells] (n samples) against probabilities
 * expect[n_cells]: cells expecting >= 5 stand alone, the rest are pooled into one bin.
 * Returns the p-value; *df and *stat get the degrees of freedom and the statistic.
 * A sample in a cell of probability 0 gives p = 0 (df 0, stat infinity). */
double sd_test_chi2_gof(const long *counts, const double *expect, int n_cells, long n, int *df,
                        double *stat);

#endif
