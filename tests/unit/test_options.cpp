// SPDX-License-Identifier: Apache-2.0
// Unit tests for vfio-broker-device's command line: every documented form, and each mistake named in its error.
#include <catch2/catch.hpp>

#include <getopt.h>
#include <pwd.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "server/options.h"

using namespace vfio_broker;
using namespace vfio_broker::server;

namespace {

// An argv that owns its strings (getopt_long permutes the pointer array, so it must be ours).
struct Argv {
	std::vector<std::string> strings;
	std::vector<char *> pointers;
	Argv(std::initializer_list<const char *> args)
	{
		strings.emplace_back("vfio-broker-device");
		for (const char *a : args)
			strings.emplace_back(a);
		for (auto &s : strings)
			pointers.push_back(s.data());
		pointers.push_back(nullptr);
	}
	int argc() const { return static_cast<int>(strings.size()); }
	char **argv() { return pointers.data(); }
};

// getopt keeps hidden state between calls (glibc resumes a half-read group of short options).
// parseOptions resets it (optind = 0); re-initialising here too keeps every test independent
// of the one before even if that ever regresses, which the group-leak test below catches.
void flushGetopt()
{
	static char name[] = "flush";
	static char *args[] = { name, nullptr };
	optind = 0;
	(void)::getopt(1, args, "");
	optind = 1;
}

Result<DaemonOptions> parse(std::initializer_list<const char *> args)
{
	Argv a(args);
	auto r = parseOptions(a.argc(), a.argv());
	flushGetopt();
	return r;
}

// Parse a command line that must be refused; returns the error message.
std::string refused(std::initializer_list<const char *> args)
{
	auto r = parse(args);
	REQUIRE_FALSE(r.ok());
	CHECK(r.error().code != 0);
	return r.error().message;
}

bool mentions(const std::string &message, const std::string &what)
{
	return message.find(what) != std::string::npos;
}

} // namespace

TEST_CASE("--device with --socket parses with the documented defaults", "[options]")
{
	auto r = parse({ "--device", "sim:edu", "--socket", "/run/vb/edu.sock" });
	REQUIRE(r.ok());
	CHECK(r->device == "sim:edu");
	CHECK(r->socketPath == "/run/vb/edu.sock");
	CHECK(r->fd == -1);
	CHECK(r->socketMode == 0600);
	CHECK_FALSE(r->socketUid);
	CHECK_FALSE(r->socketGid);
	CHECK(r->readyFd == -1);
	CHECK_FALSE(r->exitOnDisconnect);
	CHECK(r->sysfsRoot == "/sys");
	CHECK(r->devRoot == "/dev");
	CHECK(r->limits.maxDmaMaps == 4096);
	CHECK(r->limits.maxDataXfer == 1048576);
	CHECK(r->limits.maxMsgFds == 16);
	CHECK(r->limits.allowMmap);
	CHECK(r->logLevel == log::Level::Info);
	CHECK_FALSE(r->help);
	CHECK_FALSE(r->version);
}

TEST_CASE("--fd N serves an inherited socket", "[options]")
{
	auto r = parse({ "--device", "0000:01:00.0", "--fd", "3" });
	REQUIRE(r.ok());
	CHECK(r->fd == 3);
	CHECK(r->socketPath.empty());
	CHECK(r->device == "0000:01:00.0");
}

TEST_CASE("every documented option is parsed", "[options]")
{
	auto r = parse({ "--device", "/sys/bus/pci/devices/0000:01:00.0", "--socket", "s.sock",
			 "--socket-mode", "0660", "--socket-owner", "0:0", "--ready-fd", "5",
			 "--exit-on-disconnect", "--no-mmap", "--max-dma-maps", "10",
			 "--max-data-xfer", "4096", "--max-msg-fds", "4", "--sysfs-root", "/tmp/sys",
			 "--dev-root", "/tmp/dev", "--log-level", "debug" });
	REQUIRE(r.ok());
	CHECK(r->device == "/sys/bus/pci/devices/0000:01:00.0");
	CHECK(r->socketMode == 0660);
	CHECK(r->socketUid == 0u);
	CHECK(r->socketGid == 0u);
	CHECK(r->readyFd == 5);
	CHECK(r->exitOnDisconnect);
	CHECK_FALSE(r->limits.allowMmap);
	CHECK(r->limits.maxDmaMaps == 10);
	CHECK(r->limits.maxDataXfer == 4096);
	CHECK(r->limits.maxMsgFds == 4);
	CHECK(r->sysfsRoot == "/tmp/sys");
	CHECK(r->devRoot == "/tmp/dev");
	CHECK(r->logLevel == log::Level::Debug);
}

TEST_CASE("option values may also be given as --option=value", "[options]")
{
	auto r = parse({ "--device=sim:edu", "--fd=4", "--max-msg-fds=8" });
	REQUIRE(r.ok());
	CHECK(r->device == "sim:edu");
	CHECK(r->fd == 4);
	CHECK(r->limits.maxMsgFds == 8);
}

TEST_CASE("--socket-owner takes names or numbers, for the user, the group or both", "[options]")
{
	passwd *root = ::getpwuid(0);
	REQUIRE(root);
	std::string rootName = root->pw_name;

	auto r = parse({ "--device", "sim:edu", "--socket", "s", "--socket-owner", rootName.c_str() });
	REQUIRE(r.ok());
	CHECK(r->socketUid == 0u);
	CHECK_FALSE(r->socketGid);

	r = parse({ "--device", "sim:edu", "--socket", "s", "--socket-owner", "1234:5678" });
	REQUIRE(r.ok());
	CHECK(r->socketUid == 1234u);
	CHECK(r->socketGid == 5678u);

	r = parse({ "--device", "sim:edu", "--socket", "s", "--socket-owner", ":42" });
	REQUIRE(r.ok());
	CHECK_FALSE(r->socketUid);
	CHECK(r->socketGid == 42u);
}

TEST_CASE("every log level name is accepted", "[options]")
{
	using L = log::Level;
	for (auto [name, level] : { std::pair{ "debug", L::Debug }, std::pair{ "info", L::Info },
				     std::pair{ "warning", L::Warning }, std::pair{ "warn", L::Warning },
				     std::pair{ "error", L::Error } }) {
		INFO(name);
		auto r = parse({ "--device", "sim:edu", "--fd", "3", "--log-level", name });
		REQUIRE(r.ok());
		CHECK(r->logLevel == level);
	}
}

TEST_CASE("--help and --version need no other option", "[options]")
{
	auto r = parse({ "--help" });
	REQUIRE(r.ok());
	CHECK(r->help);
	r = parse({ "-h" });
	REQUIRE(r.ok());
	CHECK(r->help);
	r = parse({ "--version" });
	REQUIRE(r.ok());
	CHECK(r->version);
	CHECK(mentions(usageText(), "--device"));
}

TEST_CASE("a missing --device is refused, naming --device", "[options]")
{
	CHECK(mentions(refused({ "--socket", "s" }), "--device"));
	CHECK(mentions(refused({ "--device", "", "--socket", "s" }), "--device"));
}

TEST_CASE("both --socket and --fd, or neither, is refused naming both", "[options]")
{
	for (const std::string &msg : { refused({ "--device", "sim:edu", "--socket", "s", "--fd", "3" }),
					refused({ "--device", "sim:edu" }) }) {
		INFO(msg);
		CHECK(mentions(msg, "--socket"));
		CHECK(mentions(msg, "--fd"));
	}
}

TEST_CASE("--fd of a standard stream is refused", "[options]")
{
	for (const char *n : { "0", "1", "2" }) {
		std::string msg = refused({ "--device", "sim:edu", "--fd", n });
		INFO(msg);
		CHECK(mentions(msg, "--fd"));
		CHECK(mentions(msg, n));
	}
}

TEST_CASE("--ready-fd must be a non-standard fd other than --fd", "[options]")
{
	CHECK(mentions(refused({ "--device", "sim:edu", "--fd", "3", "--ready-fd", "3" }), "--ready-fd"));
	CHECK(mentions(refused({ "--device", "sim:edu", "--fd", "3", "--ready-fd", "2" }), "--ready-fd"));
	CHECK(parse({ "--device", "sim:edu", "--fd", "3", "--ready-fd", "4" }).ok());
}

TEST_CASE("numbers that are not numbers are refused, naming the option", "[options]")
{
	struct Case {
		const char *option;
		const char *value;
	};
	for (Case c : { Case{ "--fd", "abc" }, Case{ "--fd", "" }, Case{ "--fd", "3x" }, Case{ "--fd", "-3" },
			Case{ "--fd", "0x10" }, Case{ "--ready-fd", "five" }, Case{ "--socket-mode", "0999" },
			Case{ "--socket-mode", "rw" }, Case{ "--max-dma-maps", "many" },
			Case{ "--max-data-xfer", "1M" }, Case{ "--max-msg-fds", "-1" } }) {
		std::string msg = refused({ "--device", "sim:edu", "--socket", "s", c.option, c.value });
		INFO(c.option << " " << c.value << ": " << msg);
		CHECK(mentions(msg, c.option));
	}
}

TEST_CASE("limits outside their ranges are refused, naming the option", "[options]")
{
	struct Case {
		const char *option;
		const char *value;
	};
	for (Case c : { Case{ "--max-dma-maps", "0" }, Case{ "--max-dma-maps", "65536" },
			Case{ "--max-data-xfer", "7" }, Case{ "--max-data-xfer", "16777217" },
			Case{ "--max-msg-fds", "0" }, Case{ "--max-msg-fds", "254" },
			Case{ "--socket-mode", "1000" }, Case{ "--fd", "2147483648" },
			Case{ "--ready-fd", "99999999999999999999" } }) {
		auto r = parse({ "--device", "sim:edu", "--socket", "s", c.option, c.value });
		REQUIRE_FALSE(r.ok());
		INFO(c.option << " " << c.value << ": " << r.error().message);
		CHECK(mentions(r.error().message, c.option));
	}
	// The edges themselves are fine.
	auto r = parse({ "--device", "sim:edu", "--socket", "s", "--max-dma-maps", "65535", "--max-data-xfer", "8",
			 "--max-msg-fds", "253", "--socket-mode", "0777" });
	REQUIRE(r.ok());
	CHECK(r->limits.maxDmaMaps == 65535);
	CHECK(r->limits.maxDataXfer == 8);
	CHECK(r->limits.maxMsgFds == 253);
	CHECK(r->socketMode == 0777);
	r = parse({ "--device", "sim:edu", "--socket", "s", "--max-dma-maps", "1", "--max-data-xfer", "16777216",
		    "--max-msg-fds", "1" });
	REQUIRE(r.ok());
	CHECK(r->limits.maxDataXfer == 16u << 20);
}

TEST_CASE("an unknown --log-level is refused, naming the option and the value", "[options]")
{
	std::string msg = refused({ "--device", "sim:edu", "--fd", "3", "--log-level", "verbose" });
	CHECK(mentions(msg, "--log-level"));
	CHECK(mentions(msg, "verbose"));
	CHECK(mentions(refused({ "--device", "sim:edu", "--fd", "3", "--log-level", "INFO" }), "--log-level"));
}

TEST_CASE("an unknown option is refused, naming it", "[options]")
{
	CHECK(mentions(refused({ "--device", "sim:edu", "--fd", "3", "--bogus" }), "--bogus"));
	CHECK(mentions(refused({ "--device", "sim:edu", "--fd", "3", "-x" }), "-x"));
	CHECK(mentions(refused({ "--no-mmap=yes", "--device", "sim:edu", "--fd", "3" }), "--no-mmap"));
}

TEST_CASE("an option without its argument is refused, naming it", "[options]")
{
	CHECK(mentions(refused({ "--fd", "3", "--device" }), "--device"));
	CHECK(mentions(refused({ "--device", "sim:edu", "--socket" }), "--socket"));
}

TEST_CASE("a stray argument is refused, naming it", "[options]")
{
	CHECK(mentions(refused({ "--device", "sim:edu", "--fd", "3", "extra" }), "extra"));
	CHECK(mentions(refused({ "stray", "--device", "sim:edu", "--fd", "3" }), "stray"));
}

TEST_CASE("--socket-owner with an unknown user or group is refused, naming both the option and the name", "[options]")
{
	std::string msg = refused({ "--device", "sim:edu", "--socket", "s", "--socket-owner", "no-such-user-vb" });
	CHECK(mentions(msg, "--socket-owner"));
	CHECK(mentions(msg, "no-such-user-vb"));
	msg = refused({ "--device", "sim:edu", "--socket", "s", "--socket-owner", "0:no-such-group-vb" });
	CHECK(mentions(msg, "--socket-owner"));
	CHECK(mentions(msg, "no-such-group-vb"));
	// (uid_t)-1 means "unchanged" to chown(); it is not a user.
	CHECK(mentions(refused({ "--device", "sim:edu", "--socket", "s", "--socket-owner", "4294967295" }),
		       "--socket-owner"));
}

// In a group of short options glibc's getopt_long() does not advance optind until the group's
// last character, so argv[optind - 1] is the wrong word to quote; optopt holds the character.
TEST_CASE("an unknown short option inside a group is named in the error", "[options]")
{
	std::string msg = refused({ "--device", "sim:edu", "--fd", "3", "-Zh" });
	INFO(msg);
	CHECK(mentions(msg, "-Z"));
}

// parseOptions() resets getopt with `optind = 1`, which glibc takes as "carry on": a parse
// that stopped inside a group of short options leaves the rest of the group pending, and the
// next parse (another test, another call in a long-lived process) starts with it. glibc needs
// `optind = 0` for a full re-initialisation.
TEST_CASE("a parse that stopped inside a group of short options does not leak into the next", "[options]")
{
	Argv first({ "-Zh" }); // stays alive: glibc keeps a pointer into it
	auto r = parseOptions(first.argc(), first.argv());
	REQUIRE_FALSE(r.ok());

	Argv second({ "--device", "sim:edu", "--fd", "3" }); // a valid command line
	auto r2 = parseOptions(second.argc(), second.argv());
	flushGetopt();
	INFO((r2.ok() ? std::string("accepted") : r2.error().message));
	REQUIRE(r2.ok());
	CHECK_FALSE(r2->help); // not the stale "-h" of the first command line
	CHECK(r2->device == "sim:edu");
	CHECK(r2->fd == 3);
}

TEST_CASE("attach mode: --crosvm-socket with the placement of regions, IRQs and the DMA pool", "[options]")
{
	auto r = parse({ "--device", "sim:platform", "--crosvm-socket", "/run/crosvm.sock",
			 "--guest-region", "0=0x9100000", "--guest-region", "2=4294967296",
			 "--guest-irq", "0=96", "--dma-pool", "/dev/shm/pool,a,b,0x8000000,0x100000",
			 "--crosvm-timeout", "2500" });
	INFO((r.ok() ? std::string("accepted") : r.error().message));
	REQUIRE(r.ok());
	CHECK(r->crosvmSocket == "/run/crosvm.sock");
	CHECK(r->socketPath.empty());
	CHECK(r->fd == -1);
	REQUIRE(r->attach.regions.size() == 2);
	CHECK(r->attach.regions[0].index == 0);
	CHECK(r->attach.regions[0].address == 0x9100000);
	CHECK(r->attach.regions[1].index == 2);
	CHECK(r->attach.regions[1].address == 0x100000000);
	REQUIRE(r->attach.irqs.size() == 1);
	CHECK(r->attach.irqs[0].index == 0);
	CHECK(r->attach.irqs[0].gsi == 96);
	REQUIRE(r->attach.dmaPool);
	CHECK(r->attach.dmaPool->path == "/dev/shm/pool,a,b"); // the last two commas separate the numbers
	CHECK(r->attach.dmaPool->address == 0x8000000);
	CHECK(r->attach.dmaPool->size == 0x100000);
	CHECK(r->crosvmTimeoutMs == 2500);

	auto defaults = parse({ "--device", "sim:edu", "--crosvm-socket", "c.sock", "--guest-irq", "0=5" });
	REQUIRE(defaults.ok());
	CHECK(defaults->crosvmTimeoutMs == 10000);
	CHECK_FALSE(defaults->attach.dmaPool);
}

TEST_CASE("attach mode's mistakes are refused, naming the option", "[options]")
{
	CHECK(refused({ "--device", "sim:edu", "--crosvm-socket", "c.sock", "--socket", "s.sock",
			"--guest-irq", "0=5" }) == "--crosvm-socket (attach mode) excludes --socket and --fd");
	CHECK(refused({ "--device", "sim:edu", "--crosvm-socket", "c.sock" }) ==
	      "--crosvm-socket needs at least one --guest-region, --guest-irq or --dma-pool");
	CHECK(refused({ "--device", "sim:edu", "--socket", "s.sock", "--guest-region", "2=0x1000" }) ==
	      "--guest-region, --guest-irq and --dma-pool need --crosvm-socket");
	CHECK(refused({ "--device", "sim:edu", "--crosvm-socket", "c", "--guest-region", "2" }) ==
	      "--guest-region: \"2\" is not INDEX=VALUE");
	CHECK(mentions(refused({ "--device", "sim:edu", "--crosvm-socket", "c", "--guest-region", "x=0x1000" }),
		       "--guest-region: \"x\" is not a number"));
	CHECK(mentions(refused({ "--device", "sim:edu", "--crosvm-socket", "c", "--guest-irq", "0=4096" }),
		       "--guest-irq: 4096 is outside 0..4095"));
	CHECK(mentions(refused({ "--device", "sim:edu", "--crosvm-socket", "c", "--guest-irq", "0=-1" }),
		       "--guest-irq: \"-1\" is not a number"));
	CHECK(refused({ "--device", "sim:edu", "--crosvm-socket", "c", "--dma-pool", "/dev/shm/p,0x1000" }) ==
	      "--dma-pool: \"/dev/shm/p,0x1000\" is not FILE,ADDR,SIZE");
	CHECK(refused({ "--device", "sim:edu", "--crosvm-socket", "c", "--dma-pool", ",0x1000,0x1000" }) ==
	      "--dma-pool: \",0x1000,0x1000\" is not FILE,ADDR,SIZE");
	CHECK(mentions(refused({ "--device", "sim:edu", "--crosvm-socket", "c", "--dma-pool", "/p,0x1000,0" }),
		       "--dma-pool: 0 is outside 1.."));
	CHECK(refused({ "--device", "sim:edu", "--crosvm-socket", "c", "--dma-pool", "/p,0,4096",
			"--dma-pool", "/q,0,4096" }) == "--dma-pool given twice; one pool per device");
	CHECK(mentions(refused({ "--device", "sim:edu", "--crosvm-socket", "c", "--guest-irq", "0=5",
				 "--crosvm-timeout", "0" }), "--crosvm-timeout: 0 is outside 1..600000"));
}
