// SPDX-License-Identifier: Apache-2.0
// The shared edu walk-through (client/edu_sequence) against the real daemon on sim:edu: every
// step passes, with and without region fds, and again after a client vanished half way.
#include "daemon_fixture.h"

#include <unistd.h>

#include "client/edu_sequence.h"

using namespace vfio_broker;
using namespace vfio_broker::test;
using client::StepOutcome;

namespace {

struct Steps {
	std::vector<std::string> passed, failed, skipped;
	std::string log;
};

Steps run(Daemon &d, client::EduOptions options = {})
{
	Steps steps;
	options.report = [&](const client::StepReport &r) {
		auto &list = r.outcome == StepOutcome::Pass ? steps.passed
			     : r.outcome == StepOutcome::Fail ? steps.failed
							      : steps.skipped;
		list.push_back(r.step);
		steps.log += r.step + ": " + r.detail + "\n";
	};
	Client c = d.connect();
	client::EduSummary summary = client::runEduSequence(c, options);
	CHECK(summary.passed == steps.passed.size());
	CHECK(summary.failed == steps.failed.size());
	CHECK(summary.skipped == steps.skipped.size());
	return steps;
}

const std::vector<std::string> kAllButMmap = {
	"version",  "device-info",   "region-info",  "identify-trapped", "liveness",
	"factorial", "intx",         "msi",          "dma-map",          "dma-roundtrip",
	"dma-done-irq", "dma-unmap", "dma-blocked-unmapped", "ram-bar",  "reset",
};

} // namespace

TEST_CASE("The edu walk-through passes every step against sim:edu", "[edu_sequence]")
{
	Daemon d;
	Steps steps = run(d);
	INFO(steps.log);
	CHECK(steps.failed.empty());
	CHECK(steps.passed == kAllButMmap);
	// BAR0 holds registers with side effects: trapped, never mmap'd.
	CHECK(steps.skipped == std::vector<std::string>{ "identify-mmap" });
}

TEST_CASE("The edu walk-through passes with --no-mmap, skipping only the mmap steps", "[edu_sequence]")
{
	Daemon d({ "--no-mmap" });
	Steps steps = run(d);
	INFO(steps.log);
	CHECK(steps.failed.empty());
	std::vector<std::string> expected = kAllButMmap;
	std::erase(expected, "ram-bar");
	CHECK(steps.passed == expected);
	CHECK(steps.skipped == std::vector<std::string>{ "identify-mmap", "ram-bar" });
}

TEST_CASE("The edu walk-through passes again after a client vanished half way through it", "[edu_sequence]")
{
	Daemon d;
	std::string abortAfter = GENERATE(as<std::string>{}, "intx", "msi", "dma-map", "dma-done-irq");
	INFO("the first client vanished after step " << abortAfter);
	pid_t pid = ::fork();
	REQUIRE(pid >= 0);
	if (pid == 0) {
		// No Catch2 in the child: the sequence _exit(0)s right after the step, leaving its
		// mappings and interrupts behind; anything else is an error exit.
		auto c = Client::connect(d.socketPath());
		if (!c)
			::_exit(2);
		client::EduOptions o;
		o.abortAfter = abortAfter;
		(void)client::runEduSequence(*c, o);
		::_exit(3);
	}
	ChildProcess child = ChildProcess::adopt(pid);
	REQUIRE(child.wait().describe() == "exited 0");

	Steps steps = run(d);
	INFO(steps.log);
	CHECK(steps.failed.empty());
	CHECK(steps.passed == kAllButMmap);
}
