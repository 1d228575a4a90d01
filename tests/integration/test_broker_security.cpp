// SPDX-License-Identifier: Apache-2.0
// Who may talk to the broker: the control socket's modes, and SO_PEERCRED refusing callers
// outside root and the admin group even when file modes would let them in.
#include "broker_fixture.h"

#include <grp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <iterator>

using namespace vfio_broker;
using namespace vfio_broker::itest;
using Catch::Matchers::Contains;

namespace {

constexpr uid_t kNobody = 65534;
constexpr gid_t kNogroup = 65534;

struct stat statOf(const std::string &path)
{
	struct stat st;
	INFO(path);
	REQUIRE(::lstat(path.c_str(), &st) == 0);
	return st;
}

// An existing unprivileged group to serve as the admin group.
std::optional<std::pair<std::string, gid_t>> someGroup()
{
	for (const char *name : { "staff", "users", "adm" })
		if (const group *g = ::getgrnam(name); g && g->gr_gid != 0 && g->gr_gid != kNogroup)
			return std::make_pair(std::string(name), g->gr_gid);
	return std::nullopt;
}

BrokerOptions withAdminGroup(const std::string &group)
{
	BrokerOptions o;
	o.adminGroup = group;
	return o;
}

// Why a caller with another uid cannot be run here, or "" when it can.
std::string whyNoOtherUid()
{
	if (::geteuid() != 0)
		return "the tests do not run as root, so they cannot run a client as another user";
	auto r = runProcess({ "/bin/true" }, kWait, std::make_pair(kNobody, kNogroup));
	if (r.exited && r.code == 126)
		return "this container does not allow setuid/setgid (no CAP_SETUID/CAP_SETGID): " + r.err;
	if (!r.exited || r.code != 0)
		return "cannot run /bin/true as uid 65534: " + r.describe();
	return "";
}

// The launcher, as `uid`:`gid`, asking the broker to deassign sim:edu (harmless either way).
ProcessResult callAs(BrokerFixture &fx, uid_t uid, gid_t gid)
{
	return runProcess({ requireEnv("VFIO_BROKER_LAUNCH"), "--control", fx.controlSocket(), "--vm", "vm1", "--device",
			    lab::kSim, "--deassign" },
			  kWait, std::make_pair(uid, gid));
}

// Let others through the temp directory (mkdtemp makes it 0700); the socket's own directory
// keeps whatever the broker gave it.
void openTempDir(BrokerFixture &fx)
{
	REQUIRE(::chmod(fx.dir().c_str(), 0711) == 0);
}

} // namespace

TEST_CASE("controlSocket_withoutAdminGroup_isRootOnly", "[broker_security]")
{
	BrokerFixture fx;
	struct stat sock = statOf(fx.controlSocket());
	CHECK(S_ISSOCK(sock.st_mode));
	CHECK((sock.st_mode & 07777) == 0600);
	CHECK(sock.st_uid == ::geteuid());
	struct stat dir = statOf(fx.dir() + "/ctl");
	CHECK((dir.st_mode & 07777) == 0700);
}

TEST_CASE("controlSocket_withAdminGroup_isGroupAccessibleButNeverWorldAccessible", "[broker_security]")
{
	auto group = someGroup();
	if (!group)
		SKIP_TEST("no staff, users or adm group here to serve as the admin group");
	if (::geteuid() != 0)
		SKIP_TEST("only root may give the socket to another group");
	BrokerFixture fx(withAdminGroup(group->first));
	struct stat sock = statOf(fx.controlSocket());
	CHECK((sock.st_mode & 07777) == 0660);
	CHECK(sock.st_gid == group->second);
	struct stat dir = statOf(fx.dir() + "/ctl");
	CHECK((dir.st_mode & 07777) == 0750);
	CHECK(dir.st_gid == group->second);
}

TEST_CASE("callerOutsideTheAdminGroup_isRefused_evenWhenFileModesLetItConnect", "[broker_security]")
{
	auto group = someGroup();
	if (!group)
		SKIP_TEST("no staff, users or adm group here to serve as the admin group");
	if (std::string why = whyNoOtherUid(); !why.empty())
		SKIP_TEST(why);
	BrokerFixture fx(withAdminGroup(group->first));
	// A careless admin opened everything up: only the peer-credential check is left.
	openTempDir(fx);
	REQUIRE(::chmod((fx.dir() + "/ctl").c_str(), 0755) == 0);
	REQUIRE(::chmod(fx.controlSocket().c_str(), 0666) == 0);

	auto r = callAs(fx, kNobody, kNogroup);
	INFO(r.describe());
	REQUIRE(r.exited);
	REQUIRE(r.code != 127); // the launcher ran
	CHECK(r.code == 1);
	CHECK_THAT(r.err, Contains("deassigning sim:edu"));
	CHECK_THAT(fx.log(), Contains("refused a control connection from pid"));
	CHECK_THAT(fx.log(), Contains("uid 65534 gid 65534"));
	// Root still is served.
	CHECK(fx.listDevices().ok());
}

TEST_CASE("callerOutsideTheAdminGroup_cannotReachTheSocketThroughItsDirectory", "[broker_security]")
{
	auto group = someGroup();
	if (!group)
		SKIP_TEST("no staff, users or adm group here to serve as the admin group");
	if (std::string why = whyNoOtherUid(); !why.empty())
		SKIP_TEST(why);
	BrokerFixture fx(withAdminGroup(group->first));
	openTempDir(fx);
	auto r = callAs(fx, kNobody, kNogroup);
	INFO(r.describe());
	REQUIRE(r.exited);
	REQUIRE(r.code != 127);
	CHECK(r.code == 1);
	// The directory (0750, admin group) stopped it before the broker saw a connection.
	CHECK_THAT(fx.log(), !Contains("refused a control connection"));
}

TEST_CASE("callerInTheAdminGroup_isServed", "[broker_security]")
{
	auto group = someGroup();
	if (!group)
		SKIP_TEST("no staff, users or adm group here to serve as the admin group");
	if (std::string why = whyNoOtherUid(); !why.empty())
		SKIP_TEST(why);
	BrokerFixture fx(withAdminGroup(group->first));
	openTempDir(fx);
	auto r = callAs(fx, kNobody, group->second);
	INFO(r.describe());
	REQUIRE(r.exited);
	REQUIRE(r.code != 127);
	CHECK(r.code == 0);
	CHECK_THAT(fx.log(), !Contains("refused a control connection"));
}

TEST_CASE("deviceSocket_isOwnerOnly", "[broker_security]")
{
	BrokerFixture fx;
	auto plain = fx.assignOk("vm1", { lab::kSim });
	struct stat st = statOf(plain[0].socket_path());
	CHECK((st.st_mode & 07777) == 0600);
	CHECK(st.st_uid == ::geteuid());
}

TEST_CASE("deviceSocket_goesToTheVmmUserOnRequest", "[broker_security]")
{
	if (::geteuid() != 0)
		SKIP_TEST("only root may hand a device socket to another user");
	BrokerFixture fx;
	pb::AssignOptions owner;
	owner.set_socket_uid(kNobody);
	owner.set_socket_gid(kNogroup);
	auto owned = fx.assignOk("vm2", { lab::kNicA }, owner);
	struct stat st = statOf(owned[0].socket_path());
	CHECK((st.st_mode & 07777) == 0600);
	CHECK(st.st_uid == kNobody);
	CHECK(st.st_gid == kNogroup);
	CHECK(owned[0].options().socket_uid() == kNobody);
}

// A device daemon inheriting the broker's NOTIFY_SOCKET would report READY=1/STOPPING=1 there
// (systemd refuses them under NotifyAccess=main; a socket nobody drains blocks the daemon in
// sendto at exit, and Deassign then waits for SIGKILL).
TEST_CASE("deviceDaemon_doesNotInheritTheBrokersNotifySocket", "[broker_security]")
{
	BrokerFixture fx;
	auto a = fx.assignOk("vm1", { lab::kSim });
	std::ifstream in("/proc/" + std::to_string(a[0].daemon_pid()) + "/environ", std::ios::binary);
	std::string env((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
	REQUIRE_FALSE(env.empty());
	CHECK(env.find(std::string("NOTIFY_SOCKET=")) == std::string::npos);
}
