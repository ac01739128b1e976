/*-------------------------------------------------------------------------
 *
 * log.c
 *	  The daemon's log: one logfmt line per event or request, written with
 *	  one write(2) to a file opened for appending (or standard error), and
 *	  reopened on SIGHUP for log rotation.  Callers never pass secrets: the
 *	  access line has no body, no query string and no header.
 *
 * IDENTIFICATION
 *	  src/httpd/log.c
 *
 *-------------------------------------------------------------------------
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "httpd.h"

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static int	log_fd = STDERR_FILENO;
static char *log_path = NULL;

int
httpd_log_open(const char *path)
{
	int			fd;

	if (path == NULL)
		return 0;
	fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
	if (fd < 0)
		return -1;
	pthread_mutex_lock(&log_lock);
	if (log_fd != STDERR_FILENO)
		close(log_fd);
	log_fd = fd;
	log_path = (char *) path;
	pthread_mutex_unlock(&log_lock);
	return 0;
}

/*
 * SIGHUP: a rotated file is reopened under its name.  When that fails the
 * old descriptor stays, so that lines still go somewhere.
 */
void
httpd_log_reopen(void)
{
	if (log_path == NULL)
		return;
	if (httpd_log_open(log_path) != 0)
		httpd_log("warning", "msg=\"could not reopen the log file\" errno=%d", errno);
	else
		httpd_log("info", "msg=\"log file reopened\"");
}

static void
log_write(const char *line, size_t len)
{
	ssize_t		rc;

	pthread_mutex_lock(&log_lock);
	do
		rc = write(log_fd, line, len);
	while (rc < 0 && errno == EINTR);
	pthread_mutex_unlock(&log_lock);
}

static void
format_time(char *out, size_t outlen)
{
	struct timeval tv;
	struct tm	tm;
	size_t		n;

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	n = strftime(out, outlen, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, outlen - n, ".%03dZ", (int) (tv.tv_usec / 1000));
}

void
httpd_log(const char *level, const char *fmt,...)
{
	char		line[1024];
	char		ts[40];
	va_list		ap;
	int			n;
	int			m;

	format_time(ts, sizeof(ts));
	n = snprintf(line, sizeof(line), "time=%s level=%s ", ts, level);
	va_start(ap, fmt);
	m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		m = 0;
	n += m;
	if (n > (int) sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	log_write(line, n);
}

/*
 * A value as a logfmt token: quoted, with quotes, backslashes and every
 * byte outside printable ASCII escaped, so that a request path cannot
 * forge a line or a field.  Long values are cut.
 */
static void
logfmt_value(StrBuf *buf, const char *s, size_t maxlen)
{
	size_t		i;

	httpd_buf_append(buf, "\"", 1);
	for (i = 0; s[i] != '\0' && i < maxlen; i++)
	{
		unsigned char c = (unsigned char) s[i];

		if (c == '"' || c == '\\')
			httpd_buf_printf(buf, "\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			httpd_buf_printf(buf, "\\x%02x", c);
		else
			httpd_buf_append(buf, (const char *) &c, 1);
	}
	if (s[i] != '\0')
		httpd_buf_appends(buf, "...");
	httpd_buf_append(buf, "\"", 1);
}

void
httpd_log_access(const char *request_id, const char *method, const char *path,
				 int status, double duration_ms, const char *client_addr,
				 const char *endpoint)
{
	StrBuf		buf = {0};
	char		ts[40];

	format_time(ts, sizeof(ts));
	httpd_buf_printf(&buf, "time=%s level=info msg=request request_id=%s method=",
					 ts, request_id);
	logfmt_value(&buf, method ? method : "", 16);
	httpd_buf_appends(&buf, " path=");
	logfmt_value(&buf, path ? path : "", 256);
	httpd_buf_printf(&buf, " endpoint=%s status=%d duration_ms=%.3f client=",
					 endpoint, status, duration_ms);
	logfmt_value(&buf, client_addr ? client_addr : "", 64);
	httpd_buf_append(&buf, "\n", 1);
	if (!buf.failed)
		log_write(buf.data, buf.len);
	httpd_buf_free(&buf);
}

/* free text from a library (libmicrohttpd's messages), escaped as a value */
void
httpd_log_text(const char *level, const char *text)
{
	StrBuf		buf = {0};
	char		ts[40];

	format_time(ts, sizeof(ts));
	httpd_buf_printf(&buf, "time=%s level=%s msg=", ts, level);
	logfmt_value(&buf, text, 512);
	httpd_buf_append(&buf, "\n", 1);
	if (!buf.failed)
		log_write(buf.data, buf.len);
	httpd_buf_free(&buf);
}
