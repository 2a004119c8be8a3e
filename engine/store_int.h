/* engine/store_int.h — internals shared between the store's own files. Not for other modules. */
#ifndef ENG_STORE_INT_H
#define ENG_STORE_INT_H

#include "engine/store.h"

/* fsyncs the folder holding path, so a rename in it is durable. */
int eng__fsync_dir_of(const char *path);

#endif
