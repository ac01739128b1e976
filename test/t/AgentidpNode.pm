# AgentidpNode: set up, start and restart PostgreSQL::Test::Cluster nodes with the
# environment the server needs.  Under make test SANITIZE=1, scripts/tap.sh
# passes the sanitizer runtimes in AGENTIDP_SERVER_ENV; they must reach the
# server alone, not initdb, psql or perl, which hang with them preloaded.
package AgentidpNode;

use strict;
use warnings;

use PostgreSQL::Test::Utils;

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

# A key-encryption key file for the node (one fixed key, id k1, unless
# another line is given), named in its postgresql.conf; returns its path.
sub add_kek
{
	my ($node, $line) = @_;
	my $kek = $node->basedir . '/kek';
	PostgreSQL::Test::Utils::append_to_file($kek,
		$line // "k1 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n");
	chmod 0600, $kek;
	$node->append_conf('postgresql.conf', "agentidp.kek_file = '$kek'");
	return $kek;
}

sub restart
{
	my ($node) = @_;
	local %ENV = (%ENV, _server_env());
	$node->restart;
}

1;
