// SPDX-License-Identifier: Apache-2.0
// Unit tests for brokerd.conf and policy.conf: defaults, every semantic rule, and errors naming file, line
// and field.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "control/config.h"

using namespace vfio_broker;
using namespace vfio_broker::control;

namespace {

// A private temporary directory, removed with everything in it.
struct TempDir {
	std::string path;
	TempDir()
	{
		char tmpl[] = "/tmp/vb-config-XXXXXX";
		REQUIRE(::mkdtemp(tmpl) != nullptr);
		path = tmpl;
	}
	~TempDir()
	{
		std::error_code ec;
		std::filesystem::remove_all(path, ec);
	}
	std::string write(const std::string &name, const std::string &text) const
	{
		std::string file = path + "/" + name;
		std::ofstream(file) << text;
		return file;
	}
};

std::string sourceRoot()
{
	const char *root = std::getenv("VFIO_BROKER_SOURCE_ROOT");
	REQUIRE(root != nullptr);
	return root;
}

std::string configError(const std::string &text)
{
	auto r = parseDaemonConfig(text, "brokerd.conf");
	REQUIRE_FALSE(r.ok());
	CHECK(r.error().code == EINVAL);
	return r.error().message;
}

std::string policyError(const std::string &text)
{
	auto r = parsePolicy(text, "policy.conf");
	REQUIRE_FALSE(r.ok());
	CHECK(r.error().code == EINVAL);
	return r.error().message;
}

pb::DaemonConfig parsedConfig(const std::string &text)
{
	auto r = parseDaemonConfig(text, "brokerd.conf");
	INFO((r.ok() ? "" : r.error().message));
	REQUIRE(r.ok());
	return *r;
}

pb::BoardPolicy parsedPolicy(const std::string &text)
{
	auto r = parsePolicy(text, "policy.conf");
	INFO((r.ok() ? "" : r.error().message));
	REQUIRE(r.ok());
	return *r;
}

} // namespace

// ---- DaemonConfig: defaults and values ----

TEST_CASE("an empty daemon config gets every documented default", "[config]")
{
	pb::DaemonConfig c = parsedConfig("");
	CHECK(c.control_socket() == "/run/vfio-broker/control.sock");
	CHECK(c.admin_group().empty());
	CHECK(c.state_dir() == "/var/lib/vfio-broker");
	CHECK(c.runtime_dir() == "/run/vfio-broker");
	CHECK(c.policy_file() == "/etc/vfio-broker/policy.conf");
	CHECK(c.device_daemon() == "/usr/sbin/vfio-broker-device");
	CHECK(c.launch_method() == pb::LAUNCH_METHOD_SPAWN);
	CHECK(c.systemd_unit_template() == "vfio-broker-device@.service");
	CHECK(c.sysfs_root() == "/sys");
	CHECK(c.daemon_ready_timeout_ms() == 5000);
	CHECK(c.bind_timeout_ms() == 2000);
	CHECK(c.systemctl() == "systemctl");
	CHECK(c.simulated_devices().empty());
	CHECK_FALSE(c.has_tcp());
}

TEST_CASE("applyDefaults keeps the values a config sets", "[config]")
{
	pb::DaemonConfig c;
	c.set_control_socket("/run/x.sock");
	c.set_state_dir("/srv/state");
	c.set_launch_method(pb::LAUNCH_METHOD_SYSTEMD);
	c.set_daemon_ready_timeout_ms(1234);
	c.set_systemctl("/bin/systemctl");
	applyDefaults(c);
	CHECK(c.control_socket() == "/run/x.sock");
	CHECK(c.state_dir() == "/srv/state");
	CHECK(c.launch_method() == pb::LAUNCH_METHOD_SYSTEMD);
	CHECK(c.daemon_ready_timeout_ms() == 1234);
	CHECK(c.systemctl() == "/bin/systemctl");
	CHECK(c.bind_timeout_ms() == 2000);
	CHECK(c.runtime_dir() == "/run/vfio-broker");
}

TEST_CASE("every field of the daemon config is read", "[config]")
{
	pb::DaemonConfig c = parsedConfig(R"(
control_socket: "/run/vb/ctl.sock"
admin_group: "kvm-admins"
state_dir: "/srv/vb/state"
runtime_dir: "/run/vb"
policy_file: "/srv/vb/policy.conf"
device_daemon: "/opt/vb/vfio-broker-device"
launch_method: LAUNCH_METHOD_SYSTEMD
systemd_unit_template: "vb-dev@.service"
sysfs_root: "/tmp/fake/sys"
simulated_devices: "sim:edu"
simulated_devices: "sim:edu2"
daemon_ready_timeout_ms: 100
bind_timeout_ms: 600000
tcp { address: "[::1]:7443" tls_cert_file: "/etc/c.pem" tls_key_file: "/etc/k.pem" tls_client_ca_file: "/etc/ca.pem" }
device_daemon_args: "--no-mmap"
device_daemon_args: "--socket-mode"
device_daemon_args: "0660"
systemctl: "/usr/bin/systemctl"
)");
	CHECK(c.control_socket() == "/run/vb/ctl.sock");
	CHECK(c.admin_group() == "kvm-admins");
	CHECK(c.state_dir() == "/srv/vb/state");
	CHECK(c.runtime_dir() == "/run/vb");
	CHECK(c.policy_file() == "/srv/vb/policy.conf");
	CHECK(c.device_daemon() == "/opt/vb/vfio-broker-device");
	CHECK(c.launch_method() == pb::LAUNCH_METHOD_SYSTEMD);
	CHECK(c.systemd_unit_template() == "vb-dev@.service");
	CHECK(c.sysfs_root() == "/tmp/fake/sys");
	REQUIRE(c.simulated_devices_size() == 2);
	CHECK(c.simulated_devices(1) == "sim:edu2");
	CHECK(c.daemon_ready_timeout_ms() == 100);
	CHECK(c.bind_timeout_ms() == 600000);
	CHECK(c.tcp().address() == "[::1]:7443");
	CHECK(c.tcp().tls_client_ca_file() == "/etc/ca.pem");
	REQUIRE(c.device_daemon_args_size() == 3);
	CHECK(c.device_daemon_args(2) == "0660");
	CHECK(c.systemctl() == "/usr/bin/systemctl");
}

// ---- DaemonConfig: syntax ----

TEST_CASE("a syntax error names the file, the 1-based line and the column", "[config]")
{
	std::string e = configError("state_dir: \"/var/lib/x\"\n\ncontrol_socket \"/run/x.sock\"\n");
	CHECK_THAT(e, Catch::StartsWith("brokerd.conf:3:16: "));
	CHECK_THAT(e, Catch::Contains("Expected \":\""));
}

TEST_CASE("an unknown field is an error naming the field, line and column", "[config]")
{
	std::string e =
		configError("# comment\nstate_dir: \"/var/lib/x\"\n  contol_socket: \"/run/x.sock\"\n");
	CHECK_THAT(e, Catch::StartsWith("brokerd.conf:3:"));
	CHECK_THAT(e, Catch::Contains("unknown field \"contol_socket\""));
	CHECK_THAT(e, Catch::Contains("DaemonConfig"));
}

TEST_CASE("an unknown field inside the tcp block is an error", "[config]")
{
	std::string e = configError("tcp {\n  address: \"127.0.0.1:7443\"\n  tls_cert: \"/c.pem\"\n}\n");
	CHECK_THAT(e, Catch::StartsWith("brokerd.conf:3:"));
	CHECK_THAT(e, Catch::Contains("unknown field \"tls_cert\""));
	CHECK_THAT(e, Catch::Contains("TcpListener"));
}

TEST_CASE("an unknown launch method name is an error", "[config]")
{
	std::string e = configError("launch_method: LAUNCH_METHOD_DOCKER\n");
	CHECK_THAT(e, Catch::StartsWith("brokerd.conf:1:"));
	CHECK_THAT(e, Catch::Contains("LAUNCH_METHOD_DOCKER"));
}

TEST_CASE("a launch method number outside the enum is an error", "[config]")
{
	std::string e = configError("\nlaunch_method: 7\n");
	// Either the parser or our check refuses it; both name line 2.
	CHECK_THAT(e, Catch::StartsWith("brokerd.conf:2"));
}

TEST_CASE("a singular field given twice is an error", "[config]")
{
	std::string e = configError("state_dir: \"/a\"\nstate_dir: \"/b\"\n");
	CHECK_THAT(e, Catch::StartsWith("brokerd.conf:2:"));
	CHECK_THAT(e, Catch::Contains("state_dir"));
}

TEST_CASE("field numbers are not accepted in place of names", "[config]")
{
	std::string e = configError("3: \"/var/lib/x\"\n");
	CHECK_THAT(e, Catch::StartsWith("brokerd.conf:1:"));
}

TEST_CASE("a NUL byte in the text is a syntax error", "[config]")
{
	std::string text = "state_dir: \"/var/lib/x\"\n";
	text.insert(3, 1, '\0');
	std::string e = configError(text);
	CHECK_THAT(e, Catch::StartsWith("brokerd.conf:1:"));
}

// ---- DaemonConfig: semantic rules ----

TEST_CASE("timeouts outside 100..600000 ms are refused with the line of the field", "[config]")
{
	CHECK(configError("\n\ndaemon_ready_timeout_ms: 99\n") ==
	      "brokerd.conf:3: daemon_ready_timeout_ms: must be between 100 and 600000 (got 99)");
	CHECK(configError("bind_timeout_ms: 600001\n") ==
	      "brokerd.conf:1: bind_timeout_ms: must be between 100 and 600000 (got 600001)");
}

TEST_CASE("a timeout written as 0 is refused rather than taken as the default", "[config]")
{
	CHECK(configError("bind_timeout_ms: 0\n") ==
	      "brokerd.conf:1: bind_timeout_ms: must be between 100 and 600000 (got 0)");
}

TEST_CASE("timeouts at the ends of the range are accepted", "[config]")
{
	pb::DaemonConfig c = parsedConfig("daemon_ready_timeout_ms: 600000\nbind_timeout_ms: 100\n");
	CHECK(c.daemon_ready_timeout_ms() == 600000);
	CHECK(c.bind_timeout_ms() == 100);
}

TEST_CASE("every path field must be absolute", "[config]")
{
	for (std::string field :
	     { "control_socket", "state_dir", "runtime_dir", "policy_file", "device_daemon", "sysfs_root" }) {
		INFO(field);
		CHECK(configError("\n" + field + ": \"relative/path\"\n") ==
		      "brokerd.conf:2: " + field + ": \"relative/path\" is not an absolute path");
	}
}

TEST_CASE("a path written as an empty string is refused", "[config]")
{
	CHECK(configError("state_dir: \"\"\n") ==
	      "brokerd.conf:1: state_dir: must not be empty (leave it out for the default)");
}

TEST_CASE("control characters in a path are refused", "[config]")
{
	CHECK(configError("policy_file: \"/etc/a\\nb\"\n") ==
	      "brokerd.conf:1: policy_file: \"/etc/a\\x0ab\" contains control characters");
}

TEST_CASE("strings that are not UTF-8 are refused: the API could not carry them", "[config]")
{
	CHECK(configError("\nstate_dir: \"/var/\\xff\"\n") ==
	      "brokerd.conf:2: state_dir: \"/var/\\xff\" is not valid UTF-8");
	CHECK(policyError("rules {\n  simulated: \"sim:edu\"\n  allowed_vms: \"w\\xc0\\xafb\"\n}\n") ==
	      "policy.conf:3: rules[0].allowed_vms[0]: \"w\\xc0\\xafb\" is not valid UTF-8");
	// Well-formed UTF-8 is fine.
	CHECK(parsedConfig("state_dir: \"/srv/caf\u00e9\"\n").state_dir() == "/srv/caf\xc3\xa9");
}

TEST_CASE("control characters are refused in any string, nested ones too", "[config]")
{
	CHECK(configError(
		      "tcp {\n address: \"a\\tb:1\"\n tls_cert_file: \"/c\"\n tls_key_file: \"/k\"\n}\n") ==
	      "brokerd.conf:2: tcp.address: \"a\\x09b:1\" contains control characters");
	CHECK(policyError("board: \"lab\\x1b[31m\"\n") ==
	      "policy.conf:1: board: \"lab\\x1b[31m\" contains control characters");
}

TEST_CASE("errors in the list form of a repeated field still name a line", "[config]")
{
	CHECK(configError("\nsimulated_devices: [\"sim:edu\", \"sim:edu\"]\n") ==
	      "brokerd.conf:2: simulated_devices[1]: \"sim:edu\" is listed twice");
}

TEST_CASE("a control socket path longer than a Unix socket address holds is refused", "[config]")
{
	std::string e = configError("control_socket: \"/" + std::string(107, 'a') + "\"\n");
	CHECK_THAT(e, Catch::StartsWith("brokerd.conf:1: control_socket: longer than 107 bytes"));
	parsedConfig("control_socket: \"/" + std::string(106, 'a') + "\"\n");
}

TEST_CASE("a TCP listener without certificate and key is refused: TCP is TLS-only", "[config]")
{
	std::string e = configError("\ntcp {\n  address: \"127.0.0.1:7443\"\n}\n");
	CHECK_THAT(e, Catch::Contains(
			      "brokerd.conf:2: tcp.tls_cert_file: required: the TCP listener is TLS-only"));
	CHECK_THAT(e, Catch::Contains(
			      "brokerd.conf:2: tcp.tls_key_file: required: the TCP listener is TLS-only"));
}

TEST_CASE("a TCP listener with a certificate but no key is refused", "[config]")
{
	std::string e =
		configError("tcp {\n  address: \"127.0.0.1:7443\"\n  tls_cert_file: \"/etc/c.pem\"\n}\n");
	CHECK(e == "brokerd.conf:1: tcp.tls_key_file: required: the TCP listener is TLS-only");
}

TEST_CASE("TCP TLS files must be absolute paths", "[config]")
{
	std::string e = configError("tcp {\n  address: \"127.0.0.1:7443\"\n  tls_cert_file: \"c.pem\"\n"
				    "  tls_key_file: \"/k.pem\"\n  tls_client_ca_file: \"ca.pem\"\n}\n");
	CHECK_THAT(e,
		   Catch::Contains("brokerd.conf:3: tcp.tls_cert_file: \"c.pem\" is not an absolute path"));
	CHECK_THAT(e, Catch::Contains(
			      "brokerd.conf:5: tcp.tls_client_ca_file: \"ca.pem\" is not an absolute path"));
}

TEST_CASE("the TCP address must be host:port with a port in 1..65535", "[config]")
{
	const std::string tls = " tls_cert_file: \"/c\" tls_key_file: \"/k\" }\n";
	for (std::string bad :
	     { "7443", "localhost:", ":7443", "host:0", "host:65536", "::1:7443", "host:port" }) {
		INFO(bad);
		CHECK_THAT(
			configError("tcp { address: \"" + bad + "\"" + tls),
			Catch::StartsWith("brokerd.conf:1: tcp.address: \"" + bad + "\" is not host:port"));
	}
	for (std::string good : { "127.0.0.1:7443", "[::1]:1", "broker.lab:65535" }) {
		INFO(good);
		parsedConfig("tcp { address: \"" + good + "\"" + tls);
	}
	CHECK(configError("tcp {" + tls) == "brokerd.conf:1: tcp.address: required, as host:port");
}

TEST_CASE("simulated devices must be named sim:<name>, each once", "[config]")
{
	CHECK(configError("simulated_devices: \"edu\"\n") ==
	      "brokerd.conf:1: simulated_devices[0]: \"edu\" is not a simulated device like \"sim:edu\"");
	CHECK(configError("simulated_devices: \"sim:\"\n") ==
	      "brokerd.conf:1: simulated_devices[0]: \"sim:\" is not a simulated device like \"sim:edu\"");
	CHECK(configError("simulated_devices: \"sim:edu\"\nsimulated_devices: \"sim:edu\"\n") ==
	      "brokerd.conf:2: simulated_devices[1]: \"sim:edu\" is listed twice");
}

TEST_CASE("admin_group must be a group name", "[config]")
{
	for (std::string bad :
	     std::vector<std::string>{ "1wheel", "kvm admins", "a/b", "root:x", std::string(33, 'g') }) {
		INFO(bad);
		CHECK_THAT(configError("admin_group: \"" + bad + "\"\n"),
			   Catch::StartsWith("brokerd.conf:1: admin_group: \"" + bad +
					     "\" is not a group name"));
	}
	for (std::string good :
	     std::vector<std::string>{ "vfio-admin", "_kvm", "lab.ops", std::string(32, 'g') })
		CHECK(parsedConfig("admin_group: \"" + good + "\"\n").admin_group() == good);
}

TEST_CASE("systemd_unit_template must name a template service unit", "[config]")
{
	for (std::string bad :
	     { "vfio-broker-device.service", "@.service", "vb dev@.service", "vb@.socket" }) {
		INFO(bad);
		CHECK_THAT(configError("systemd_unit_template: \"" + bad + "\"\n"),
			   Catch::StartsWith("brokerd.conf:1: systemd_unit_template: \"" + bad +
					     "\" is not a template unit name"));
	}
}

TEST_CASE("systemctl is a program name on PATH or an absolute path, without arguments", "[config]")
{
	CHECK(parsedConfig("systemctl: \"/usr/bin/systemctl\"\n").systemctl() == "/usr/bin/systemctl");
	CHECK(parsedConfig("systemctl: \"fake-systemctl\"\n").systemctl() == "fake-systemctl");
	CHECK_THAT(configError("systemctl: \"bin/systemctl\"\n"),
		   Catch::StartsWith("brokerd.conf:1: systemctl: \"bin/systemctl\" is neither"));
	CHECK_THAT(configError("systemctl: \"systemctl --user\"\n"),
		   Catch::StartsWith("brokerd.conf:1: systemctl: \"systemctl --user\" is not a program"));
	CHECK_THAT(configError("systemctl: \"\"\n"),
		   Catch::StartsWith("brokerd.conf:1: systemctl: must not be empty"));
}

TEST_CASE("device_daemon_args may not repeat the options the broker sets", "[config]")
{
	for (std::string reserved : { "--device", "--socket=/x", "--fd=3", "--ready-fd" }) {
		INFO(reserved);
		CHECK(configError("device_daemon_args: \"--no-mmap\"\ndevice_daemon_args: \"" + reserved +
				  "\"\n") ==
		      "brokerd.conf:2: device_daemon_args[1]: \"" + reserved +
			      "\" is set by the broker for every device daemon and may not be given here");
	}
	CHECK(parsedConfig("device_daemon_args: \"--socket-owner=64055\"\n").device_daemon_args(0) ==
	      "--socket-owner=64055");
	CHECK(configError("device_daemon_args: \"\"\n") ==
	      "brokerd.conf:1: device_daemon_args[0]: must not be empty");
}

TEST_CASE("several semantic errors are reported together, in file order", "[config]")
{
	std::string e = configError("bind_timeout_ms: 1\nstate_dir: \"x\"\nadmin_group: \"9\"\n");
	CHECK(e ==
	      "brokerd.conf:1: bind_timeout_ms: must be between 100 and 600000 (got 1)\n"
	      "brokerd.conf:2: state_dir: \"x\" is not an absolute path\n"
	      "brokerd.conf:3: admin_group: \"9\" is not a group name (a letter or _, then letters, digits, "
	      "_ - .; at most 32)");
}

TEST_CASE("a flood of errors is cut short with a count of the rest", "[config]")
{
	std::string text;
	for (int i = 0; i < 30; i++)
		text += "device_daemon_args: \"--fd\"\n";
	std::string e = configError(text);
	CHECK_THAT(e, Catch::EndsWith("\n(10 more errors)"));
	CHECK(std::count(e.begin(), e.end(), '\n') == 20);
}

// ---- Loading files ----

TEST_CASE("loadDaemonConfig names the missing file and keeps ENOENT", "[config]")
{
	TempDir dir;
	auto r = loadDaemonConfig(dir.path + "/nope.conf");
	REQUIRE_FALSE(r.ok());
	CHECK(r.error().code == ENOENT);
	CHECK(r.error().message ==
	      "cannot read daemon config " + dir.path + "/nope.conf: No such file or directory");
}

TEST_CASE("loadDaemonConfig reads the file and names it in errors", "[config]")
{
	TempDir dir;
	auto ok = loadDaemonConfig(dir.write("good.conf", "state_dir: \"/srv/vb\"\n"));
	REQUIRE(ok.ok());
	CHECK(ok->state_dir() == "/srv/vb");
	CHECK(ok->runtime_dir() == "/run/vfio-broker");

	std::string bad = dir.write("bad.conf", "\nstate_dir: \"srv\"\n");
	auto r = loadDaemonConfig(bad);
	REQUIRE_FALSE(r.ok());
	CHECK(r.error().message == bad + ":2: state_dir: \"srv\" is not an absolute path");
}

TEST_CASE("a config file larger than 1 MiB is refused unread", "[config]")
{
	TempDir dir;
	std::string big = dir.write("big.conf", "# " + std::string(1u << 20, 'x') + "\n");
	auto r = loadDaemonConfig(big);
	REQUIRE_FALSE(r.ok());
	CHECK(r.error().code == EFBIG);
	CHECK_THAT(r.error().message, Catch::Contains(big) && Catch::Contains("larger than 1048576 bytes"));
}

TEST_CASE("a directory or a FIFO in place of a config file is refused without blocking", "[config]")
{
	TempDir dir;
	auto r = loadPolicy(dir.path);
	REQUIRE_FALSE(r.ok());
	CHECK(r.error().message == "cannot read board policy " + dir.path + ": not a regular file");

	std::string fifo = dir.path + "/fifo";
	REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
	auto f = loadDaemonConfig(fifo);
	REQUIRE_FALSE(f.ok());
	CHECK(f.error().message == "cannot read daemon config " + fifo + ": not a regular file");
}

TEST_CASE("loadPolicy names the missing file", "[config]")
{
	TempDir dir;
	auto r = loadPolicy(dir.path + "/policy.conf");
	REQUIRE_FALSE(r.ok());
	CHECK(r.error().code == ENOENT);
	CHECK_THAT(r.error().message,
		   Catch::StartsWith("cannot read board policy " + dir.path + "/policy.conf: "));
}

// ---- BoardPolicy ----

TEST_CASE("a policy with every matcher and option is read", "[config]")
{
	pb::BoardPolicy p = parsedPolicy(R"(
board: "lab"
rules {
  name: "all"
  pci_address: "0000:0A:1f.7"
  vendor_device: "8086:10D3"
  sysfs_path: "/sys/bus/pci/devices/0000:0a:1f.7"
  dt_path: "/soc/ethernet@ff0000"
  dt_compatible: "vendor,model"
  simulated: "sim:edu"
  allowed_vms: "a"
  allowed_vms: "b"
  allow_no_iommu: true
  allow_identity_mapping: true
  on_deassign: DEASSIGN_ACTION_QUARANTINE
  on_daemon_exit: DAEMON_EXIT_ACTION_FAIL
  max_restarts: 1000
}
)");
	CHECK(p.board() == "lab");
	REQUIRE(p.rules_size() == 1);
	const pb::DeviceRule &r = p.rules(0);
	CHECK(r.pci_address() == "0000:0A:1f.7"); // kept as written; matching normalises
	CHECK(r.allowed_vms_size() == 2);
	CHECK(r.on_deassign() == pb::DEASSIGN_ACTION_QUARANTINE);
	CHECK(r.on_daemon_exit() == pb::DAEMON_EXIT_ACTION_FAIL);
	CHECK(r.max_restarts() == 1000);
}

TEST_CASE("an empty policy parses, and denies everything", "[config]")
{
	CHECK(parsedPolicy("# nothing allowed on this board\n").rules_size() == 0);
}

TEST_CASE("a malformed PCI address names the rule, its line and the field", "[config]")
{
	std::string e = policyError(R"(rules { name: "sim" simulated: "sim:edu" }
rules { name: "nic" vendor_device: "8086:10d3" }
rules {
  name: "rtc"
  pci_address: "0000:1:0.0"
}
)");
	CHECK(e == "policy.conf:5: rules[2] (\"rtc\").pci_address: \"0000:1:0.0\" is not a PCI address like "
		   "0000:01:00.0");
}

TEST_CASE("PCI addresses with an impossible device or function are refused", "[config]")
{
	for (std::string bad : { "0000:01:20.0", "0000:01:00.8", "01:00.0", "pci:0000:01:00.0",
				 "0000:01:00.0 ", "000g:01:00.0" }) {
		INFO(bad);
		CHECK_THAT(policyError("rules { pci_address: \"" + bad + "\" }"),
			   Catch::Contains("rules[0].pci_address: \"" + bad + "\" is not a PCI address"));
	}
}

TEST_CASE("a malformed vendor:device is refused", "[config]")
{
	for (std::string bad : { "8086", "8086:10d", "8086-10d3", "80861:0d3", "xxxx:10d3" }) {
		INFO(bad);
		CHECK(policyError("rules {\n  name: \"nic\"\n  vendor_device: \"" + bad + "\"\n}\n") ==
		      "policy.conf:3: rules[0] (\"nic\").vendor_device: \"" + bad +
			      "\" is not a PCI vendor:device in hex like 8086:10d3");
	}
}

TEST_CASE("a rule without any matcher is refused at the line of the rule", "[config]")
{
	CHECK(policyError("\nrules {\n  name: \"any\"\n  allowed_vms: \"web\"\n}\n") ==
	      "policy.conf:2: rules[0] (\"any\"): matches nothing: set at least one of pci_address, "
	      "vendor_device, "
	      "sysfs_path, dt_path, dt_compatible, simulated");
}

TEST_CASE("rule names must be unique", "[config]")
{
	CHECK(policyError("rules { name: \"a\" simulated: \"sim:edu\" }\nrules { name: \"a\" simulated: "
			  "\"sim:x\" }\n") ==
	      "policy.conf:2: rules[1] (\"a\").name: \"a\" names an earlier rule too; names must be unique");
}

TEST_CASE("a rule name with spaces or quotes is refused", "[config]")
{
	CHECK(policyError("rules { name: \"my nic\" simulated: \"sim:edu\" }\n") ==
	      "policy.conf:1: rules[0].name: \"my nic\" is not a rule name (letters, digits and _ - . : @ +; "
	      "at most 64)");
}

TEST_CASE("sysfs and device-tree paths in rules must be absolute", "[config]")
{
	CHECK_THAT(
		policyError("rules { sysfs_path: \"devices/platform/x\" }"),
		Catch::Contains("rules[0].sysfs_path: \"devices/platform/x\" is not an absolute sysfs path"));
	CHECK_THAT(policyError("rules { dt_path: \"pl031@9010000\" }"),
		   Catch::Contains("rules[0].dt_path: \"pl031@9010000\" is not a device-tree node path"));
	CHECK_THAT(policyError("rules { dt_compatible: \"arm, pl031\" }"),
		   Catch::Contains("rules[0].dt_compatible: \"arm, pl031\" is not a compatible string"));
}

TEST_CASE("a simulated matcher must name sim:<name>", "[config]")
{
	CHECK(policyError("rules { simulated: \"edu\" }") ==
	      "policy.conf:1: rules[0].simulated: \"edu\" is not a simulated device like \"sim:edu\"");
}

TEST_CASE("allowed VMs must be names the API accepts, each once", "[config]")
{
	CHECK(policyError(
		      "rules {\n simulated: \"sim:edu\"\n allowed_vms: \"web\"\n allowed_vms: \"web\"\n}") ==
	      "policy.conf:4: rules[0].allowed_vms[1]: \"web\" is listed twice");
	CHECK(policyError("rules {\n simulated: \"sim:edu\"\n allowed_vms: \"\"\n}") ==
	      "policy.conf:3: rules[0].allowed_vms[0]: \"\" is not a VM name (1 to 64 letters, digits, '-', "
	      "'_' or '.')");
	CHECK_THAT(policyError("rules { simulated: \"sim:edu\" allowed_vms: \"web server\" }"),
		   Catch::Contains("rules[0].allowed_vms[0]: \"web server\" is not a VM name"));
	CHECK_THAT(
		policyError("rules { simulated: \"sim:edu\" allowed_vms: \"" + std::string(65, 'v') + "\" }"),
		Catch::Contains("is not a VM name"));
	CHECK(parsedPolicy("rules { simulated: \"sim:edu\" allowed_vms: \"" + std::string(64, 'v') + "\" }")
		      .rules(0)
		      .allowed_vms(0)
		      .size() == 64);
}

TEST_CASE("allow_no_iommu without allow_identity_mapping is refused: it could never apply", "[config]")
{
	CHECK(policyError("rules {\n dt_compatible: \"arm,pl031\"\n allow_no_iommu: true\n}") ==
	      "policy.conf:3: rules[0].allow_no_iommu: needs allow_identity_mapping: true (a device without "
	      "an "
	      "IOMMU is only assigned identity-mapped)");
}

TEST_CASE("no_dma on a rule matching PCI devices is refused: a PCI function can always do DMA", "[config]")
{
	CHECK_THAT(policyError("rules {\n vendor_device: \"8086:10d3\"\n no_dma: true\n}"),
		   Catch::StartsWith("policy.conf:3: rules[0].no_dma: is for platform and AMBA devices"));
	CHECK_THAT(policyError("rules {\n pci_address: \"0000:01:00.0\"\n no_dma: true\n}"),
		   Catch::Contains("rules[0].no_dma"));
}

TEST_CASE("out-of-range rule enums and restart counts are refused", "[config]")
{
	CHECK_THAT(policyError("rules { simulated: \"sim:edu\" max_restarts: 1001 }"),
		   Catch::Contains("rules[0].max_restarts: must be at most 1000"));
	CHECK_THAT(policyError("rules { simulated: \"sim:edu\" on_deassign: DEASSIGN_ACTION_SHRED }"),
		   Catch::StartsWith("policy.conf:1:") && Catch::Contains("DEASSIGN_ACTION_SHRED"));
}

TEST_CASE("an unknown field in a rule is an error with line and column", "[config]")
{
	std::string e = policyError("rules {\n  name: \"nic\"\n  vendor: \"8086\"\n}\n");
	CHECK_THAT(e, Catch::StartsWith("policy.conf:3:3: unknown field \"vendor\""));
	CHECK_THAT(e, Catch::Contains("DeviceRule"));
}

// ---- The shipped examples ----

TEST_CASE("the example configs/brokerd.conf parses to a realistic config", "[config]")
{
	auto r = loadDaemonConfig(sourceRoot() + "/configs/brokerd.conf");
	INFO((r.ok() ? "" : r.error().message));
	REQUIRE(r.ok());
	CHECK(r->control_socket() == "/run/vfio-broker/control.sock");
	CHECK(r->admin_group() == "vfio-admin");
	CHECK(r->launch_method() == pb::LAUNCH_METHOD_SPAWN);
	CHECK(r->policy_file() == "/etc/vfio-broker/policy.conf");
	REQUIRE(r->simulated_devices_size() == 1);
	CHECK(r->simulated_devices(0) == "sim:edu");
	CHECK(r->device_daemon_args_size() == 2);
	CHECK_FALSE(r->has_tcp());
}

TEST_CASE("the example configs/policy.conf parses with the rules its comments describe", "[config]")
{
	auto r = loadPolicy(sourceRoot() + "/configs/policy.conf");
	INFO((r.ok() ? "" : r.error().message));
	REQUIRE(r.ok());
	REQUIRE(r->rules_size() == 7);
	CHECK(r->rules(0).simulated() == "sim:edu");
	CHECK(r->rules(0).allowed_vms().empty());
	CHECK(r->rules(1).vendor_device() == "8086:10d3");
	CHECK(r->rules(1).on_deassign() == pb::DEASSIGN_ACTION_QUARANTINE);
	REQUIRE(r->rules(1).allowed_vms_size() == 1);
	CHECK(r->rules(1).allowed_vms(0) == "web");
	CHECK(r->rules(2).pci_address() == "0000:00:04.0");
	CHECK(r->rules(2).allowed_vms_size() == 2);
	CHECK(r->rules(3).dt_compatible() == "arm,pl031");
	CHECK(r->rules(3).allow_identity_mapping());
	CHECK(r->rules(3).allow_no_iommu());
	CHECK(r->rules(4).simulated() == "sim:platform");
	CHECK(r->rules(5).dt_path() == "/soc/ethernet@ff0c0000");
	CHECK_FALSE(r->rules(5).no_dma());
	CHECK(r->rules(6).dt_compatible() == "arm,pl061");
	CHECK(r->rules(6).no_dma());
}
