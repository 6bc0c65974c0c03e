/* error.c: names and messages of the error table in error.h. */
#include "error.h"

const char *corral_error_name(int code)
{
    switch (code) {
    case CORRAL_OK:
        return "OK";
#define CORRAL_ERROR_NAME(name, number, message)                                                   \
    case -(number):                                                                                \
        return #name;
        CORRAL_ERROR_MAP(CORRAL_ERROR_NAME)
#undef CORRAL_ERROR_NAME
    }
    return "UNKNOWN";
}

const char *corral_error_message(int code)
{
    switch (code) {
    case CORRAL_OK:
        return "success";
#define CORRAL_ERROR_MESSAGE(name, number, message)                                                \
    case -(number):                                                                                \
        return message;
        CORRAL_ERROR_MAP(CORRAL_ERROR_MESSAGE)
#undef CORRAL_ERROR_MESSAGE
    }
    return "unknown error";
}
