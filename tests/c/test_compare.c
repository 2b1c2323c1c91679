/* test_compare.c -- the statistics behind `callscope compare`: quantiles,
 * the two estimators and their special cases, the numbers of a value,
 * and the --fail-if conditions. */
#include "test.h"

#include "cs_analysis.h"
#include "cs_value.h"

#include <math.h>

#define NEAR(a, b, tol) ASSERT_TRUE(fabs((a) - (b)) <= (tol))

void
test_digits_quantiles(void)
{
    /* textbook values */
    NEAR(cs_norm_quantile(0.975), 1.959963985, 1e-8);
    NEAR(cs_norm_quantile(0.995), 2.575829304, 1e-8);
    NEAR(cs_norm_quantile(0.5), 0, 1e-12);
    NEAR(cs_norm_quantile(0.025), -1.959963985, 1e-8);
    NEAR(cs_chi2_quantile(0.025, 9), 2.700389, 1e-5);
    NEAR(cs_chi2_quantile(0.975, 9), 19.022768, 1e-5);
    NEAR(cs_chi2_quantile(0.05, 1), 0.0039321, 1e-6);
    NEAR(cs_chi2_quantile(0.5, 100), 99.334129, 1e-4);
    ASSERT_TRUE(isinf(cs_norm_quantile(1)));
    ASSERT_TRUE(isnan(cs_chi2_quantile(0.5, 0)));
}

void
test_digits_estimators(void)
{
    cs_digits_ctx cnh, gen;
    ASSERT_OK(cs_digits_prepare(&cnh, CS_DIGITS_CNH, 0.95, 0.95, 10));
    ASSERT_OK(cs_digits_prepare(&gen, CS_DIGITS_GENERAL, 0.95, 0.99, 10));
    ASSERT_EQ(cs_digits_prepare(&cnh, 7, 0.95, 0.95, 10), CS_EINVAL);
    ASSERT_EQ(cs_digits_prepare(&cnh, CS_DIGITS_CNH, 1.0, 0.95, 10), CS_EINVAL);
    ASSERT_EQ(cs_digits_prepare(&cnh, CS_DIGITS_CNH, 0.95, 0.95, 1), CS_EINVAL);
    ASSERT_OK(cs_digits_prepare(&cnh, CS_DIGITS_CNH, 0.95, 0.95, 10));
    /* delta = 1/2 log10(9 / 2.7004) + log10(1.95996) */
    NEAR(cnh.cnh_delta, 0.5 * log10(9 / 2.700389) + log10(1.959964), 1e-6);
    NEAR(gen.general_probability, pow(0.05, 0.1), 1e-12);
    ASSERT_EQ(gen.general_runs_needed, 299);

    /* values 1 +- 1e-6 exactly: mean 1, max deviation 1e-6 */
    double x[10];
    for (int i = 0; i < 10; i++)
        x[i] = 1 + (i % 2 ? 1e-6 : -1e-6);
    NEAR(cs_digits_of(&gen, x, NULL, 1, 15.95), 6, 1e-6);
    double sd = sqrt(10 * 1e-12 / 9);
    NEAR(cs_digits_of(&cnh, x, NULL, 1, 15.95), -log10(sd) - cnh.cnh_delta, 1e-6);
    /* identical: the full precision; around zero: none; NaN: none */
    for (int i = 0; i < 10; i++)
        x[i] = 0.25;
    NEAR(cs_digits_of(&cnh, x, NULL, 1, 15.95), 15.95, 1e-12);
    for (int i = 0; i < 10; i++)
        x[i] = 0;
    NEAR(cs_digits_of(&gen, x, NULL, 1, 7.22), 7.22, 1e-12);
    for (int i = 0; i < 10; i++)
        x[i] = i % 2 ? 1e-9 : -1e-9;
    NEAR(cs_digits_of(&cnh, x, NULL, 1, 15.95), 0, 0);
    x[3] = NAN;
    NEAR(cs_digits_of(&gen, x, NULL, 1, 15.95), 0, 0);
    /* never above the type's precision, never below 0 */
    for (int i = 0; i < 10; i++)
        x[i] = 1 + (i % 2 ? 1e-17 : -1e-17) + (i == 0 ? 2e-16 : 0);
    ASSERT_TRUE(cs_digits_of(&gen, x, NULL, 1, 15.95) <= 15.95);
    for (int i = 0; i < 10; i++)
        x[i] = i % 2 ? 1 : 100; /* off by 98% of the mean: hardly a digit */
    NEAR(cs_digits_of(&gen, x, NULL, 1, 15.95), -log10(49.5 / 50.5), 1e-9);
    for (int i = 0; i < 10; i++)
        x[i] = i % 2 ? -1 : 3; /* off by twice the mean: none */
    NEAR(cs_digits_of(&gen, x, NULL, 1, 15.95), 0, 0);
    /* complex: the modulus of the deviation against the mean's */
    double re[10], im[10];
    for (int i = 0; i < 10; i++) {
        re[i] = 3;
        im[i] = 4 + (i % 2 ? 5e-5 : -5e-5);
    }
    NEAR(cs_digits_of(&gen, re, im, 1, 15.95), 5, 1e-6);
}

static const void *
no_blob(void *ctx, uint64_t h, uint64_t n)
{
    (void)ctx, (void)h, (void)n;
    return NULL;
}

void
test_value_numbers(void)
{
    cs_buf b, out;
    cs_buf_init(&b);
    cs_buf_init(&out);
    /* (1.5, {"k": (2+3j)}, True, 'text', <array <f4 (2,)>) */
    cs_val_tag(&b, CS_V_TUPLE);
    cs_val_u32(&b, 5);
    double d = 1.5;
    cs_val_tag(&b, CS_V_FLOAT);
    cs_buf_append(&b, &d, 8);
    cs_val_tag(&b, CS_V_DICT);
    cs_val_u32(&b, 1);
    cs_val_tag(&b, CS_V_STR);
    cs_val_data(&b, "k", 1);
    double z[2] = {2, 3};
    cs_val_tag(&b, CS_V_COMPLEX);
    cs_buf_append(&b, z, 16);
    cs_val_tag(&b, CS_V_TRUE);
    cs_val_tag(&b, CS_V_STR);
    cs_val_data(&b, "text", 4);
    float f[2] = {0.5f, -2.0f};
    cs_val_tag(&b, CS_V_ARRAY);
    cs_val_name(&b, "<f4", 3);
    cs_val_u8(&b, 1);
    cs_val_u64(&b, 2);
    cs_val_u8(&b, 'C');
    cs_val_data(&b, f, sizeof f);
    ASSERT_OK(cs_value_numbers(b.data, b.len, no_blob, NULL, &out));
    ASSERT_EQ(out.len / sizeof(cs_num), 5);
    const cs_num *v = (const cs_num *)out.data;
    ASSERT_TRUE(v[0].kind == CS_NUM_FLOAT && v[0].re == 1.5);
    ASSERT_TRUE(v[1].kind == CS_NUM_COMPLEX && v[1].re == 2 && v[1].im == 3);
    ASSERT_TRUE(v[2].kind == CS_NUM_EXACT && v[2].exact == 1);
    ASSERT_TRUE(v[3].kind == CS_NUM_FLOAT && v[3].re == 0.5 && v[3].max_digits < 8);
    ASSERT_TRUE(v[4].re == -2.0);
    /* a blob that is missing, and a truncated value, are errors */
    cs_buf r;
    cs_buf_init(&r);
    cs_val_tag(&r, CS_V_ARRAY);
    cs_val_name(&r, "<f8", 3);
    cs_val_u8(&r, 1);
    cs_val_u64(&r, 1000);
    cs_val_u8(&r, 'C');
    cs_val_blobref(&r, 42, 8000);
    out.len = 0;
    ASSERT_EQ(cs_value_numbers(r.data, r.len, no_blob, NULL, &out), CS_EFORMAT);
    for (size_t n = 0; n < b.len; n++) {
        out.len = 0;
        ASSERT_EQ(cs_value_numbers(b.data, n, no_blob, NULL, &out), CS_EFORMAT);
    }
    cs_buf_free(&r);
    cs_buf_free(&b);
    cs_buf_free(&out);
}

void
test_compare_gates(void)
{
    cs_gate g;
    char why[128];
    cs_diff_row r = {.in_a = 1, .in_b = 1, .calls = {10, 10}, .errors = {0, 2},
                     .total = {1000000, 2000000}, .mean = {1e5, 2e5}, .digits = 8};
    ASSERT_OK(cs_gate_parse("time>+10%", &g, why));
    ASSERT_TRUE(cs_gate_fails(&g, &r));
    ASSERT_OK(cs_gate_parse("time>+150%", &g, why));
    ASSERT_TRUE(!cs_gate_fails(&g, &r));
    ASSERT_OK(cs_gate_parse("mean>+50us", &g, why)); /* +100 us */
    ASSERT_TRUE(cs_gate_fails(&g, &r));
    ASSERT_OK(cs_gate_parse("mean > +200us", &g, why));
    ASSERT_TRUE(!cs_gate_fails(&g, &r));
    ASSERT_OK(cs_gate_parse("errors>0", &g, why));
    ASSERT_TRUE(cs_gate_fails(&g, &r));
    ASSERT_OK(cs_gate_parse("digits<10", &g, why));
    ASSERT_TRUE(cs_gate_fails(&g, &r));
    ASSERT_OK(cs_gate_parse("digits<=7.5", &g, why));
    ASSERT_TRUE(!cs_gate_fails(&g, &r));
    ASSERT_OK(cs_gate_parse("calls!=10", &g, why));
    ASSERT_TRUE(!cs_gate_fails(&g, &r));
    ASSERT_OK(cs_gate_parse("time>1", &g, why)); /* seconds */
    ASSERT_TRUE(!cs_gate_fails(&g, &r));
    r.in_a = 0; /* new in B: no time change to judge */
    ASSERT_OK(cs_gate_parse("time>+10%", &g, why));
    ASSERT_TRUE(!cs_gate_fails(&g, &r));
    ASSERT_EQ(cs_gate_parse("speed>1", &g, why), CS_EINVAL);
    ASSERT_TRUE(strstr(why, "unknown metric") != NULL);
    ASSERT_EQ(cs_gate_parse("time~1", &g, why), CS_EINVAL);
    ASSERT_EQ(cs_gate_parse("time>", &g, why), CS_EINVAL);
    ASSERT_EQ(cs_gate_parse("time>5parsecs", &g, why), CS_EINVAL);
    ASSERT_EQ(cs_gate_parse("errors>5ms", &g, why), CS_EINVAL);
    cs_digit_row d = {.min = 3.5};
    ASSERT_OK(cs_gate_parse("digits<4", &g, why));
    ASSERT_TRUE(cs_gate_fails_digits(&g, &d));
    ASSERT_OK(cs_gate_parse("time>+1%", &g, why));
    ASSERT_TRUE(!cs_gate_fails_digits(&g, &d));
}
