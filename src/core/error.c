/* error.c -- error codes and their messages. */
#include "cs_core.h"

#include <errno.h>

const char *
cs_strerror(int err)
{
    switch (err) {
    case CS_OK:
        return "success";
#define CS__CASE(name, val, msg)                                             \
    case CS_E##name:                                                         \
        return msg;
        CS_ERRNO_MAP(CS__CASE)
#undef CS__CASE
    default:
        return "unknown error";
    }
}

int
cs_from_errno(int e)
{
    switch (e) {
    case 0:
        return CS_OK;
    case ENOMEM:
        return CS_ENOMEM;
    case ENOENT:
    case ENOTDIR:
        return CS_ENOENT;
    case EEXIST:
        return CS_EEXIST;
    case EINVAL:
        return CS_EINVAL;
    case EBUSY:
    case EWOULDBLOCK:
        return CS_EBUSY;
    case ENOSPC:
        return CS_EFULL;
    default:
        return CS_EIO;
    }
}
