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
        return CS_ENOENT;
    case ENOTDIR:
        return CS_ENOTDIR;
    case EACCES:
    case EPERM:
        return CS_EACCES;
    case EROFS:
        return CS_EROFS;
    case EDQUOT:
        return CS_EDQUOT;
    case ENAMETOOLONG:
        return CS_ENAMETOOLONG;
    case EEXIST:
        return CS_EEXIST;
    case EINVAL:
        return CS_EINVAL;
    case EBUSY:
    case EWOULDBLOCK:
        return CS_EBUSY;
    case ENOSPC:
        return CS_ENOSPC;
    default:
        return CS_EIO;
    }
}
