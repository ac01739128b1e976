# Scenario: a DBA rotates the key-encryption key.  A new KEK goes first in
# agentidp.kek_file, the server reloads, rewrap_keys() moves every signing
# key under it, and the old KEK is removed: keys still decrypt and sign in
# new backends.  A KEK file readable by others is refused, and a key whose
# KEK is gone says so.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

use AgentidpNode;

sub random_kek
{
	my ($id) = @_;
	open my $r, '<', '/dev/urandom' or die;
	read $r, my $raw, 32;
	close $r;
	my $b64 = MIME::Base64::encode_base64($raw, '');
	$b64 =~ tr{+/}{-_};
	$b64 =~ s/=+$//;
	return "$id $b64\n";
}
use MIME::Base64 ();

my $node = PostgreSQL::Test::Cluster->new('kek');
$node->init;
my $kek = $node->basedir . '/kek';
PostgreSQL::Test::Utils::append_to_file($kek, random_kek('old'));
chmod 0600, $kek;
$node->append_conf('postgresql.conf', "agentidp.kek_file = '$kek'");
AgentidpNode::start($node);

$node->safe_psql('postgres', 'CREATE EXTENSION agentidp');
my $tenant = $node->safe_psql('postgres', "SELECT agentidp.create_tenant('kek-test')");
$node->safe_psql('postgres', "SELECT agentidp.rotate_signing_key('$tenant')");

my $sign_and_verify = "SELECT agentidp.jws_verify(agentidp._sign_with_tenant_key('$tenant', '{\"x\":1}'),"
  . " agentidp.jwks('$tenant'), '{ES256}') ->> 'x'";
is($node->safe_psql('postgres', $sign_and_verify), '1', 'signs under the first KEK');

# a new KEK goes first; the old one stays until the keys have moved
my $old = PostgreSQL::Test::Utils::slurp_file($kek);
open my $fh, '>', $kek or die;
print $fh random_kek('new') . $old;
close $fh;
$node->reload;
is($node->safe_psql('postgres', 'SELECT agentidp.rewrap_keys()'), '1', 'one key rewrapped');
is($node->safe_psql('postgres', 'SELECT kek_id FROM agentidp.signing_keys'), 'new',
	'the key names the new KEK');
is($node->safe_psql('postgres', 'SELECT agentidp.rewrap_keys()'), '0', 'a second rewrap moves nothing');

# the old KEK goes away: new backends decrypt with the new one
my $new = PostgreSQL::Test::Utils::slurp_file($kek);
$new =~ s/^old .*\n//m;
open $fh, '>', $kek or die;
print $fh $new;
close $fh;
$node->reload;
is($node->safe_psql('postgres', $sign_and_verify), '1', 'signs after the old KEK is gone');

# a KEK file others can read is refused
chmod 0644, $kek;
my ($rc, $out, $err) = $node->psql('postgres',
	"SELECT agentidp.rotate_signing_key('$tenant')");
like($err, qr/the key-encryption key file is accessible to other users/,
	'a KEK file readable by others is refused');
chmod 0600, $kek;

# a key whose KEK is no longer in the file cannot be decrypted
open $fh, '>', $kek or die;
print $fh random_kek('other');
close $fh;
$node->reload;
($rc, $out, $err) = $node->psql('postgres', $sign_and_verify);
like($err, qr/cannot decrypt signing key .*\n.*key-encryption key "new" is not in agentidp.kek_file/,
	'a missing KEK is named');

$node->stop;
done_testing();
