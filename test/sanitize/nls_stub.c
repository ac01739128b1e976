/*
 * nls_stub.c
 *	  Preloaded after the ASan runtime when the server runs an instrumented
 *	  agentidp.so (make test SANITIZE=1).  ASan's textdomain interceptor,
 *	  preloaded into an uninstrumented postgres binary, corrupts glibc's
 *	  gettext lock and hangs the server at startup; with these no-ops in
 *	  the way, messages are simply untranslated.  Never used otherwise.
 */
char	   *textdomain(const char *domain);
char	   *bindtextdomain(const char *domain, const char *dir);
char	   *bind_textdomain_codeset(const char *domain, const char *codeset);

char *
textdomain(const char *domain)
{
	return (char *) "messages";
}

char *
bindtextdomain(const char *domain, const char *dir)
{
	return (char *) dir;
}

char *
bind_textdomain_codeset(const char *domain, const char *codeset)
{
	return (char *) codeset;
}
