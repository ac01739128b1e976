# AgentidpNode: start and restart PostgreSQL::Test::Cluster nodes with the
# environment the server needs.  Under make test SANITIZE=1, scripts/tap.sh
# passes the sanitizer runtimes in AGENTIDP_SERVER_ENV; they must reach the
# server alone, not initdb, psql or perl, which hang with them preloaded.
package AgentidpNode;

use strict;
use warnings;

sub _server_env
{
	my %env;
	foreach my $kv (split ' ', ($ENV{AGENTIDP_SERVER_ENV} // ''))
	{
		my ($k, $v) = split /=/, $kv, 2;
		$env{$k} = $v;
	}
	return %env;
}

sub start
{
	my ($node) = @_;
	local %ENV = (%ENV, _server_env());
	$node->start;
}

sub restart
{
	my ($node) = @_;
	local %ENV = (%ENV, _server_env());
	$node->restart;
}

1;
