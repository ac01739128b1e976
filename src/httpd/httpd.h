/*-------------------------------------------------------------------------
 *
 * httpd.h
 *	  Declarations shared by the parts of agentidp-httpd, the HTTP front
 *	  that turns OAuth2 and admin API requests into calls of the
 *	  extension's SQL functions.  The daemon is a client program: it links libpq and
 *	  libmicrohttpd, never the backend.
 *
 * IDENTIFICATION
 *	  src/httpd/httpd.h
 *
 *-------------------------------------------------------------------------
 */
#ifndef AGENTIDP_HTTPD_H
#define AGENTIDP_HTTPD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTPD_VERSION "0.9"

/* configuration (main.c) */
typedef struct HttpdConfig
{
	char	   *listen;			/* address to bind */
	int			port;
	char	   *conninfo;		/* never logged: it may hold a password */
	int			pool_size;
	int			pool_wait_ms;	/* how long a request waits for a connection */
	int			statement_timeout_ms;
	char	   *public_url;		/* issuer base, no trailing slash */
	char	   *tls_cert;
	char	   *tls_key;
	char	   *trusted_proxy_header;	/* NULL: use the peer address */
	char	   *log_file;		/* NULL: standard error */
	char	   *pid_file;
	int			max_connections;
	int			connection_timeout;	/* seconds */
	size_t		body_limit;
	int			threads;
	int			cache_seconds;	/* JWKS and metadata cache in the daemon */
	char	   *tenant_host_suffix;	/* route by Host: <tenant><suffix>; NULL: off */
	int			token_batch_max;	/* token requests per transaction; 1: off */
	int			token_batch_concurrency;	/* batches running at once */
} HttpdConfig;

extern HttpdConfig httpd_config;

/* log.c */
extern int	httpd_log_open(const char *path);
extern void httpd_log_reopen(void);
extern void httpd_log(const char *level, const char *fmt,...)
			__attribute__((format(printf, 2, 3)));
extern void httpd_log_text(const char *level, const char *text);
extern void httpd_log_access(const char *request_id, const char *method,
							 const char *path, int status, double duration_ms,
							 const char *client_addr, const char *endpoint);

/* form.c: application/x-www-form-urlencoded and the little JSON we build */
typedef struct FormField
{
	char	   *name;
	char	   *value;
} FormField;

typedef struct Form
{
	FormField  *fields;
	int			nfields;
} Form;

typedef struct StrBuf
{
	char	   *data;
	size_t		len;
	size_t		cap;
	bool		failed;			/* out of memory: the result is unusable */
} StrBuf;

extern bool httpd_form_parse(const char *body, size_t len, Form *form,
							 const char **error);
extern const char *httpd_form_get(const Form *form, const char *name);
extern void httpd_form_free(Form *form);
extern char *httpd_url_decode(const char *s, size_t len, bool plus_is_space);
extern bool httpd_utf8_valid(const char *s, size_t len);
extern unsigned char *httpd_base64_decode(const char *s, size_t len,
										  size_t *outlen);
extern void httpd_buf_append(StrBuf *buf, const char *s, size_t len);
extern void httpd_buf_appends(StrBuf *buf, const char *s);
extern void httpd_buf_printf(StrBuf *buf, const char *fmt,...)
			__attribute__((format(printf, 2, 3)));
extern void httpd_buf_json_string(StrBuf *buf, const char *s);
extern void httpd_buf_free(StrBuf *buf);

/* pool.c */
typedef enum PoolStatement
{
	STMT_TOKEN,
	STMT_REVOKE,
	STMT_INTROSPECT,
	STMT_METADATA,
	STMT_JWKS,
	STMT_TOKEN_BATCH,
	STMT_ADMIN,
	STMT_COUNT
} PoolStatement;

typedef enum PoolResult
{
	POOL_OK,					/* a row: status and body filled */
	POOL_NULL,					/* the function returned NULL */
	POOL_UNAVAILABLE,			/* no connection, or it broke: 503 */
	POOL_ERROR					/* the statement failed: 500 */
} PoolResult;

extern bool httpd_pool_init(const char *conninfo, int size, int wait_ms,
							int statement_timeout_ms);
extern PoolResult httpd_pool_call(PoolStatement stmt, const char *param,
								  int *status, char **body);
extern PoolResult httpd_pool_call_params(PoolStatement stmt, int nparams,
										 const char *const *values, int *status,
										 char **body, char **extra);
extern PoolResult httpd_pool_call_rows(PoolStatement stmt, const char *param,
										int nrows, int *statuses, char **bodies,
										char **extras);
extern bool httpd_pool_ping(void);
extern void httpd_pool_shutdown(void);
extern void httpd_pool_stats(int *size, int *in_use, int *waiting,
							 int *connected);

/*
 * batch.c: the token endpoint's group commit; *headers gets the answer's
 * header lines (the rate limit's), or NULL
 */
extern PoolResult httpd_token_call(const char *request, int *status, char **body,
								   char **headers);
extern void httpd_batch_stats(uint64_t *batches, uint64_t *requests);

/* metrics.c */
typedef enum Endpoint
{
	EP_TOKEN,
	EP_REVOKE,
	EP_INTROSPECT,
	EP_JWKS,
	EP_METADATA,
	EP_HEALTHZ,
	EP_READYZ,
	EP_METRICS,
	EP_ADMIN,
	EP_OTHER,
	EP_COUNT
} Endpoint;

extern const char *httpd_endpoint_name(Endpoint ep);
extern void httpd_metrics_request(Endpoint ep, int status, double seconds);
extern void httpd_metrics_db_error(void);
extern char *httpd_metrics_render(size_t *len);

/* server.c */
extern bool httpd_server_start(void);
extern void httpd_server_drain(int max_seconds);
extern void httpd_server_stop(void);

#endif							/* AGENTIDP_HTTPD_H */
