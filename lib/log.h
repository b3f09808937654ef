/* Minimal leveled logging to stderr. One process-wide threshold, set once at
 * start-up by the composition root (cli/); everything else only logs. */
#ifndef MESHID_LIB_LOG_H
#define MESHID_LIB_LOG_H

typedef enum { LOG_LVL_DEBUG = 0, LOG_LVL_INFO, LOG_LVL_WARN, LOG_LVL_ERROR, LOG_LVL_OFF } log_level;

/* Set the lowest level that is printed (default LOG_LVL_WARN). */
void log_set_level(log_level lvl);
/* Parse "debug|info|warn|error|off"; returns -1 when unknown. */
int log_level_parse(const char *s);
void log_msg(log_level lvl, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define LOG_DEBUG(...) log_msg(LOG_LVL_DEBUG, __FILE__, __LINE__, __VA_ARGS__)
#define LOG_INFO(...) log_msg(LOG_LVL_INFO, __FILE__, __LINE__, __VA_ARGS__)
#define LOG_WARN(...) log_msg(LOG_LVL_WARN, __FILE__, __LINE__, __VA_ARGS__)
#define LOG_ERROR(...) log_msg(LOG_LVL_ERROR, __FILE__, __LINE__, __VA_ARGS__)

#endif
