/* ParameterizedTest and friends live in criterion.h in the TSan build's runner
 * (tests/support/runner/criterion/criterion.h). */
#ifndef SPECDEC_TESTS_RUNNER_PARAMETERIZED_H
#define SPECDEC_TESTS_RUNNER_PARAMETERIZED_H
#include <criterion/criterion.h>
#endif
