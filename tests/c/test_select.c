/* test_select.c -- selection patterns. */
#include "test.h"

#include "cs_select.h"

void
test_select_patterns(void)
{
    cs_select *s;
    char why[128];
    ASSERT_OK(cs_select_new(&s));
    ASSERT_EQ(cs_select_match(s, "a", "f"), 0); /* empty selects nothing */
    ASSERT_OK(cs_select_add(s, CS_SEL_TRACE, "json.decoder.JSONDecoder.raw_decode", why));
    ASSERT_OK(cs_select_add(s, CS_SEL_TRACE, "mypkg.solver.*", why));
    ASSERT_OK(cs_select_add(s, CS_SEL_TRACE, "test_trace", why));
    ASSERT_OK(cs_select_add(s, CS_SEL_TRACE, "Shape.area", why));
    ASSERT_OK(cs_select_add(s, CS_SEL_MODULE, "lib", why));
    ASSERT_OK(cs_select_add(s, CS_SEL_EXCLUDE, "lib.vendor.*", why));
    ASSERT_OK(cs_select_add(s, CS_SEL_EXCLUDE, "mypkg.solver._private*", why));
    ASSERT_EQ(cs_select_count(s), 5);
    ASSERT_EQ(cs_select_match(s, "json.decoder", "JSONDecoder.raw_decode"), 1);
    ASSERT_EQ(cs_select_match(s, "json.decoder", "JSONDecoder.decode"), 0);
    ASSERT_EQ(cs_select_match(s, "mypkg.solver", "step"), 1);
    ASSERT_EQ(cs_select_match(s, "mypkg.solver.linalg", "Solver.run"), 1);
    ASSERT_EQ(cs_select_match(s, "mypkg.solver", "_private_helper"), 0);
    ASSERT_EQ(cs_select_match(s, "mypkg", "solve"), 0);
    ASSERT_EQ(cs_select_match(s, "x.y", "test_trace"), 1);            /* bare name */
    ASSERT_EQ(cs_select_match(s, "x.y", "Cls.test_trace"), 1);
    ASSERT_EQ(cs_select_match(s, "x.y", "test_trace2"), 0);
    ASSERT_EQ(cs_select_match(s, "geometry", "Shape.area"), 1);       /* dotted tail */
    ASSERT_EQ(cs_select_match(s, "geometry", "BigShape.area"), 0);
    ASSERT_EQ(cs_select_match(s, "lib", "f"), 1);                     /* module */
    ASSERT_EQ(cs_select_match(s, "lib.sub", "C.m"), 1);               /* submodule */
    ASSERT_EQ(cs_select_match(s, "library", "f"), 0);
    ASSERT_EQ(cs_select_match(s, "lib.vendor.x", "f"), 0);            /* excluded */
    ASSERT_EQ(cs_select_match(s, "", "test_trace"), 1);
    cs_select_free(s);
    cs_select_free(NULL);
}

void
test_select_bad_patterns(void)
{
    cs_select *s;
    char why[128];
    ASSERT_OK(cs_select_new(&s));
    ASSERT_EQ(cs_select_add(s, CS_SEL_TRACE, "", why), CS_EINVAL);
    ASSERT_TRUE(strstr(why, "empty") != NULL);
    ASSERT_EQ(cs_select_add(s, CS_SEL_TRACE, "a b", why), CS_EINVAL);
    ASSERT_EQ(cs_select_add(s, CS_SEL_TRACE, "a.[bc", why), CS_EINVAL);
    ASSERT_TRUE(strstr(why, "unclosed") != NULL);
    ASSERT_EQ(cs_select_add(s, CS_SEL_TRACE, "a..b", why), CS_EINVAL);
    ASSERT_EQ(cs_select_add(s, CS_SEL_TRACE, ".a", why), CS_EINVAL);
    ASSERT_EQ(cs_select_add(s, CS_SEL_MODULE, "pkg.*", why), CS_EINVAL);
    ASSERT_EQ(cs_select_add(s, 9, "x", why), CS_EINVAL);
    ASSERT_EQ(cs_select_count(s), 0);
    cs_select_free(s);
}
