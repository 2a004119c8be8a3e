/* sink/sink_int.h — what the sink's own files share (sink.c owns struct snk_sink; chquery.c
 * reads the table name and the shard URLs through these). Not for other modules. */
#ifndef SNK_SINK_INT_H
#define SNK_SINK_INT_H

#include "sink/sink.h"

const char *snk__table(const snk_sink *s);
size_t snk__nshards(const snk_sink *s);
const char *snk__url(const snk_sink *s, size_t i);

#endif
