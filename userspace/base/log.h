/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Structured logging: one line per event, "ts level msg key=value ...", to
 * stderr. Thread-safe (one write(2) per line). The level is process-wide and
 * set once at start.
 */
#ifndef H2SPLIT_LOG_H
#define H2SPLIT_LOG_H

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* "debug" | "info" | "warn" | "error": 0, or -EINVAL for anything else. */
int log_parse_level(const char *s, enum log_level *out);
/* |fmt| is the message then key=value pairs, e.g. log_msg(LOG_INFO, "listening addr=%s", a). */
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...)                                                                             \
	do {                                                                                       \
		if (log_get_level() <= LOG_DEBUG)                                                  \
			log_msg(LOG_DEBUG, __VA_ARGS__);                                           \
	} while (0)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
