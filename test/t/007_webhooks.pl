# Scenario: webhooks delivered by the background worker to a receiver on
# 127.0.0.1 (test/webhooks/receiver.py), which checks every signature.
#  1. Healthy: each event arrives exactly once, signed, and the worker's
#     status counts the deliveries.
#  2. The receiver answers 500 twice: the retries come, each signed, and
#     the third attempt delivers.
#  3. A receiver that always fails: after agentidp.webhook_max_attempts
#     the delivery is dead.
#  4. The server restarts while the receiver holds a delivery: while it
#     waits, the worker holds no lock, snapshot or transaction id; after
#     the restart the delivery comes again (at least once) and is
#     delivered.
#  5. The same after kill -9 of the worker.
#  6. A new key-encryption key: rewrap_keys() moves the webhook secrets
#     under it, and once the old one is gone deliveries are still signed
#     with the secrets the receiver knows.
use strict;
use warnings;

use FindBin;
use IPC::Run;
use JSON::PP;
use MIME::Base64 ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use AgentidpNode;

my $python = -x '/usr/bin/python3' ? '/usr/bin/python3' : 'python3';
my $receiver_script = "$FindBin::Bin/../webhooks/receiver.py";

my $node = PostgreSQL::Test::Cluster->new('webhooks');
$node->init;
my $kek = $node->basedir . '/kek';
PostgreSQL::Test::Utils::append_to_file($kek, "k1 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n");
chmod 0600, $kek;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'agentidp'
agentidp.kek_file = '$kek'
agentidp.worker_naptime = 1
agentidp.allow_private_addresses = on
agentidp.webhook_timeout = '2s'
agentidp.webhook_retry_base = 1
agentidp.webhook_retry_cap = 2
agentidp.webhook_max_attempts = 3
restart_after_crash = on
log_line_prefix = '%m [%p] %b '
});
AgentidpNode::start($node);
$node->safe_psql('postgres', 'CREATE EXTENSION agentidp');

# the receiver, and the control file it reads at every request
my $dir = PostgreSQL::Test::Utils::tempdir;
my ($port_file, $log_file, $control_file) = map { "$dir/$_" } qw(port log control);
my %control;

sub control
{
	%control = (%control, @_);
	open my $fh, '>', "$control_file.tmp" or die;
	print $fh encode_json(\%control);
	close $fh;
	rename "$control_file.tmp", $control_file or die;
}
control();
my $receiver = IPC::Run::start([ $python, $receiver_script, $port_file, $log_file, $control_file ],
	'>', "$dir/receiver.out", '2>&1');
# stopped however the test ends, without changing its exit status
END { local $?; $receiver->kill_kill if $receiver; }

# polls until the condition holds or 40 s pass
sub wait_until
{
	my ($cond, $what) = @_;
	my $deadline = time() + 40;
	while (time() < $deadline)
	{
		return pass($what) if $cond->();
		usleep(100_000);
	}
	fail($what);
	diag(slurp_file("$dir/receiver.out"));
	return 0;
}

wait_until(sub { -s $port_file }, 'the receiver listens') or BAIL_OUT('no receiver');
my $port = slurp_file($port_file);

# what the receiver saw: one entry per request received or answered
sub received
{
	my ($phase, $id) = @_;
	return () unless -e $log_file;
	my @entries;
	open my $fh, '<', $log_file or die;
	while (my $line = <$fh>)
	{
		my $e = eval { decode_json($line) } or next;
		push @entries, $e
		  if $e->{phase} eq $phase && (!defined $id || $e->{id} eq $id);
	}
	close $fh;
	return @entries;
}

# a query that may meet the server restarting: undef until it answers
sub query
{
	my ($sql) = @_;
	my ($ret, $stdout) = $node->psql('postgres', $sql);
	return $ret == 0 ? $stdout : undef;
}

sub subscribe
{
	my ($path, $events) = @_;
	my ($id, $secret) = split /\|/, $node->safe_psql('postgres', qq{
		SELECT subscription_id, secret FROM agentidp.create_webhook_subscription(
			(SELECT tenant_id FROM agentidp.tenants WHERE name = 'hooks'),
			'http://127.0.0.1:$port$path', '$events')});
	control(secrets => { %{ $control{secrets} // {} }, $path => [$secret] });
	return $id;
}

# the event of an agent's change, for a subscription: its id and delivery
sub event_of
{
	my ($agent, $type, $sub) = @_;
	return $node->safe_psql('postgres', qq{
		SELECT e.event_id FROM agentidp.webhook_events AS e
		JOIN agentidp.webhook_deliveries AS d USING (tenant_id, event_id)
		WHERE e.data ->> 'name' = '$agent' AND e.type = '$type' AND d.subscription_id = '$sub'});
}

sub delivery
{
	my ($event, $sub) = @_;
	return query(qq{
		SELECT status || ' ' || attempts || ' ' || coalesce(last_status::text, '-')
		FROM agentidp.webhook_deliveries WHERE event_id = '$event' AND subscription_id = '$sub'}) // '';
}

sub register
{
	my ($name) = @_;
	$node->safe_psql('postgres', qq{
		SELECT agentidp.register_agent(tenant_id, '$name') FROM agentidp.tenants WHERE name = 'hooks'});
}

$node->safe_psql('postgres', "SELECT agentidp.create_tenant('hooks')");
my $ok = subscribe('/ok', '{*}');
my $failing = subscribe('/fail', '{agent.suspended}');
control(status => { '/fail' => 500 });

# 1. healthy: each event exactly once
register("a$_") for 1 .. 5;
$node->safe_psql('postgres', q{
	SELECT count(*) FROM agentidp.create_client_secret((SELECT agent_id FROM agentidp.agents WHERE name = 'a1'));
	SELECT agentidp.revoke_client_secret((SELECT client_id FROM agentidp.agents WHERE name = 'a1'));
});
my @events = split /\n/, $node->safe_psql('postgres',
	"SELECT event_id FROM agentidp.webhook_deliveries WHERE subscription_id = '$ok' ORDER BY 1");
is(scalar @events, 7, 'healthy: seven events queued');
wait_until(
	sub {
		query("SELECT count(*) FROM agentidp.webhook_deliveries WHERE subscription_id = '$ok' AND status = 'delivered'")
		  eq '7' && scalar(received('answered')) >= 7;
	},
	'healthy: all delivered');
sleep(3);    # three more runs of the worker: nothing may come twice
my %count;
$count{ $_->{id} }++ for received('received');
is_deeply([ sort keys %count ], \@events, 'healthy: the receiver got every event');
is_deeply([ grep { $count{$_} != 1 } keys %count ], [], 'healthy: each exactly once');
is_deeply(
	[ grep { !$_->{sig_ok} || !$_->{ts_ok} || $_->{body_id} ne $_->{id}
		  || $_->{content_type} ne 'application/json' } received('received') ],
	[], 'healthy: each signed, timestamped, its body naming its webhook-id');
is( $node->safe_psql('postgres', 'SELECT DISTINCT type FROM agentidp.webhook_events ORDER BY 1'),
	"agent.created\ncredential.created\ncredential.revoked", 'healthy: the event types');
cmp_ok($node->safe_psql('postgres', "SELECT total_rows FROM agentidp.worker_status WHERE task = 'webhooks'"),
	'>=', 7, 'healthy: worker_status counts the deliveries');

# 2. 500 twice, then delivered
control(fail_first => 2);
register('flaky');
my $flaky = event_of('flaky', 'agent.created', $ok);
wait_until(sub { delivery($flaky, $ok) eq 'delivered 3 200' }, 'retries: delivered at the third attempt');
my @tries = received('answered', $flaky);
is_deeply([ map { $_->{status} } @tries ], [ 500, 500, 200 ], 'retries: 500, 500, then 200');
is_deeply([ grep { !$_->{sig_ok} } @tries ], [], 'retries: each attempt signed');
control(fail_first => 0);

# 3. always 500: dead after three attempts
$node->safe_psql('postgres', q{
	SELECT agentidp.suspend_agent(agent_id) FROM agentidp.agents WHERE name = 'flaky'});
my $suspended = event_of('flaky', 'agent.suspended', $failing);
wait_until(sub { delivery($suspended, $failing) eq 'dead 3 500' }, 'dead: after three attempts');
wait_until(sub { delivery($suspended, $ok) eq 'delivered 1 200' }, 'dead: the other subscription got it');
is(scalar(received('received', $suspended)), 4, 'dead: three attempts, and one delivery to /ok');
like( $node->safe_psql('postgres', qq{
		SELECT last_error FROM agentidp.webhook_deliveries
		WHERE event_id = '$suspended' AND subscription_id = '$failing'}),
	qr/^HTTP 500: /, 'dead: last_error says why');

# 4. and 5. the receiver holds a delivery while the server restarts, or
# while the worker is killed: it comes again
sub interrupted_delivery
{
	my ($name, $interrupt) = @_;
	control(delay => 4);
	register($name);
	my $event = event_of($name, 'agent.created', $ok);
	wait_until(sub { scalar(received('received', $event)) == 1 }, "$name: the receiver holds the delivery");
	my $worker = $node->safe_psql('postgres',
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'agentidp worker'");
	$interrupt->($worker);
	control(delay => 0);
	wait_until(sub { delivery($event, $ok) eq 'delivered 2 200' }, "$name: delivered at the second attempt");
	is(scalar(received('received', $event)), 2, "$name: sent twice (at least once)");
}

interrupted_delivery(
	'restart',
	sub {
		my ($worker) = @_;
		is( $node->safe_psql('postgres', qq{
				SELECT count(*) FROM pg_locks WHERE pid = $worker AND locktype <> 'virtualxid'}),
			'0', 'restart: the waiting worker holds no lock');
		is( $node->safe_psql('postgres', qq{
				SELECT backend_xmin IS NULL AND backend_xid IS NULL FROM pg_stat_activity WHERE pid = $worker}),
			't', 'restart: nor a snapshot or a transaction id');
		AgentidpNode::restart($node);
	});

interrupted_delivery(
	'crash',
	sub {
		my ($worker) = @_;
		kill 'KILL', $worker;
	});

is( $node->safe_psql('postgres', qq{
		SELECT count(*) FROM agentidp.webhook_deliveries WHERE subscription_id = '$ok' AND status <> 'delivered'}),
	'0', 'nothing lost');

# 6. a new KEK first in the file, the secrets moved, the old KEK removed
my $old_kek = slurp_file($kek);
open my $fh, '>', $kek or die;
print $fh "k2 " . MIME::Base64::encode_base64url(join('', map { chr(int(rand(256))) } 1 .. 32)) . "\n"
  . $old_kek;
close $fh;
$node->reload;
is($node->safe_psql('postgres', 'SELECT agentidp.rewrap_keys()'), '2', 'new KEK: both secrets move');
is($node->safe_psql('postgres', 'SELECT DISTINCT kek_id FROM agentidp.webhook_subscriptions'), 'k2',
	'new KEK: they name it');
my $new_kek = slurp_file($kek);
$new_kek =~ s/^k1 .*\n//m;
open $fh, '>', $kek or die;
print $fh $new_kek;
close $fh;
$node->reload;
register('rewrapped');
my $rewrapped = event_of('rewrapped', 'agent.created', $ok);
wait_until(sub { delivery($rewrapped, $ok) eq 'delivered 1 200' }, 'new KEK: delivered without the old one');
ok((received('received', $rewrapped))[0]{sig_ok}, 'new KEK: signed with the same secret');
unlike(slurp_file($node->logfile), qr/TRAP|terminated by signal 11|PANIC/, 'no crash but the one made');

$node->stop('fast');
done_testing();
