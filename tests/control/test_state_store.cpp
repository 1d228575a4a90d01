// SPDX-License-Identifier: Apache-2.0
// The state directory: the single-instance lock, and state.pb surviving crashes and refusing corruption.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "control/state_store.h"

using namespace vfio_broker::control;
using vfio_broker::Status;
namespace fs = std::filesystem;

namespace {

class TempDir
{
public:
	TempDir()
	{
		char tmpl[] = "/tmp/vb-state-XXXXXX";
		REQUIRE(::mkdtemp(tmpl) != nullptr);
		path_ = tmpl;
	}
	~TempDir()
	{
		std::error_code ec;
		fs::remove_all(path_, ec);
	}
	TempDir(const TempDir &) = delete;
	TempDir &operator=(const TempDir &) = delete;

	const std::string &path() const { return path_; }

private:
	std::string path_;
};

void writeRaw(const std::string &path, const std::string &bytes)
{
	std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

std::string readRaw(const std::string &path)
{
	std::ifstream in(path, std::ios::binary);
	std::ostringstream out;
	out << in.rdbuf();
	return out.str();
}

std::vector<std::string> dirEntries(const std::string &dir)
{
	std::vector<std::string> names;
	for (const auto &e : fs::directory_iterator(dir))
		names.push_back(e.path().filename().string());
	std::sort(names.begin(), names.end());
	return names;
}

pb::BrokerState sampleState()
{
	pb::BrokerState state;
	state.set_version(1);
	pb::DeviceRecord *a = state.add_devices();
	a->set_device_id("pci:0000:01:00.0");
	a->set_state(pb::DEVICE_STATE_ASSIGNED);
	a->set_vm("vm1");
	a->mutable_options()->set_identity_mapping(true);
	a->mutable_options()->set_socket_uid(107);
	a->set_original_driver("e1000e");
	a->set_original_override("");
	a->set_socket_path("/run/vfio-broker/pci-0000:01:00.0.sock");
	a->set_daemon_pid(4242);
	a->set_daemon_start_time(123456789);
	a->set_assigned_at_unix(1700000000);
	a->set_restarts(2);
	pb::DeviceRecord *b = state.add_devices();
	b->set_device_id("sim:edu");
	b->set_state(pb::DEVICE_STATE_QUARANTINED);
	b->set_vm("vm2");
	b->set_unit("vfio-broker-device@sim:edu.service");
	return state;
}

} // namespace

// ---- load and save

TEST_CASE("load_noStateFile_givesEmptyStateVersion1", "[state_store]")
{
	TempDir dir;
	auto state = StateStore(dir.path()).load();
	REQUIRE(state.ok());
	CHECK(state->version() == 1);
	CHECK(state->devices().empty());
}

TEST_CASE("saveThenLoad_everyFieldRoundTrips", "[state_store]")
{
	TempDir dir;
	StateStore store(dir.path());
	pb::BrokerState saved = sampleState();
	REQUIRE(store.save(saved).ok());
	auto loaded = store.load();
	REQUIRE(loaded.ok());
	CHECK(loaded->SerializeAsString() == saved.SerializeAsString());
	CHECK(loaded->devices(0).options().socket_uid() == 107);
}

TEST_CASE("save_stateWithoutVersion_isWrittenAsVersion1", "[state_store]")
{
	TempDir dir;
	StateStore store(dir.path());
	pb::BrokerState state = sampleState();
	state.clear_version();
	REQUIRE(store.save(state).ok());
	auto loaded = store.load();
	REQUIRE(loaded.ok());
	CHECK(loaded->version() == 1);
}

TEST_CASE("save_unknownVersion_isRefused", "[state_store]")
{
	TempDir dir;
	pb::BrokerState state = sampleState();
	state.set_version(2);
	Status st = StateStore(dir.path()).save(state);
	REQUIRE_FALSE(st.ok());
	CHECK(st.error().code == EINVAL);
	CHECK_FALSE(fs::exists(dir.path() + "/state.pb"));
}

TEST_CASE("save_overAnOlderState_replacesItWhole", "[state_store]")
{
	TempDir dir;
	StateStore store(dir.path());
	REQUIRE(store.save(sampleState()).ok());
	pb::BrokerState smaller;
	smaller.set_version(1);
	smaller.add_devices()->set_device_id("pci:0000:03:00.0");
	REQUIRE(store.save(smaller).ok());
	auto loaded = store.load();
	REQUIRE(loaded.ok());
	REQUIRE(loaded->devices_size() == 1);
	CHECK(loaded->devices(0).device_id() == "pci:0000:03:00.0");
}

TEST_CASE("save_leavesOnlyStatePbWithMode0600", "[state_store]")
{
	TempDir dir;
	StateStore store(dir.path());
	REQUIRE(store.save(sampleState()).ok());
	REQUIRE(store.save(sampleState()).ok());
	CHECK(dirEntries(dir.path()) == std::vector<std::string>{ "state.pb" });
	struct stat st;
	REQUIRE(::stat((dir.path() + "/state.pb").c_str(), &st) == 0);
	CHECK((st.st_mode & 07777) == 0600);
}

TEST_CASE("load_tempFileLeftByACrashedSave_isIgnoredAndOldStateWhole", "[state_store]")
{
	TempDir dir;
	StateStore store(dir.path());
	REQUIRE(store.save(sampleState()).ok());
	// A save that died after writing half its temp file, before the rename.
	std::string full = sampleState().SerializeAsString();
	writeRaw(dir.path() + "/state.pb.tmp-999999-0", full.substr(0, full.size() / 2));
	auto loaded = store.load();
	REQUIRE(loaded.ok());
	CHECK(loaded->SerializeAsString() == full);
}

TEST_CASE("lock_tempFilesLeftByACrashedSave_areRemoved", "[state_store]")
{
	TempDir dir;
	StateStore store(dir.path());
	REQUIRE(store.save(sampleState()).ok());
	writeRaw(dir.path() + "/state.pb.tmp-999999-0", "half");
	writeRaw(dir.path() + "/state.pb.tmp-999999-1", "");
	auto lock = store.lock();
	REQUIRE(lock.ok());
	CHECK(dirEntries(dir.path()) == std::vector<std::string>{ "brokerd.lock", "state.pb" });
	auto loaded = store.load();
	REQUIRE(loaded.ok());
	CHECK(loaded->devices_size() == 2);
}

TEST_CASE("load_corruptFile_isRefusedNamingTheFile", "[state_store]")
{
	TempDir dir;
	std::string path = dir.path() + "/state.pb";
	writeRaw(path, "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff garbage");
	auto state = StateStore(dir.path()).load();
	REQUIRE_FALSE(state.ok());
	CHECK(state.error().code == EBADMSG);
	CHECK_THAT(state.error().message, Catch::Contains(path) && Catch::Contains("corrupt"));
}

TEST_CASE("load_textThatParsesAsUnknownFields_isRefusedByItsVersion", "[state_store]")
{
	TempDir dir;
	writeRaw(dir.path() + "/state.pb", "hello");
	auto state = StateStore(dir.path()).load();
	REQUIRE_FALSE(state.ok());
	CHECK(state.error().code == EBADMSG);
	CHECK_THAT(state.error().message, Catch::Contains(dir.path() + "/state.pb"));
}

TEST_CASE("load_truncatedToZeroBytes_isRefused", "[state_store]")
{
	TempDir dir;
	writeRaw(dir.path() + "/state.pb", "");
	auto state = StateStore(dir.path()).load();
	REQUIRE_FALSE(state.ok());
	CHECK(state.error().code == EBADMSG);
}

TEST_CASE("load_unknownVersion_isRefusedNamingIt", "[state_store]")
{
	TempDir dir;
	pb::BrokerState future = sampleState();
	future.set_version(2);
	writeRaw(dir.path() + "/state.pb", future.SerializeAsString());
	auto state = StateStore(dir.path()).load();
	REQUIRE_FALSE(state.ok());
	CHECK(state.error().code == EBADMSG);
	CHECK_THAT(state.error().message, Catch::Contains("version 2"));
	CHECK(readRaw(dir.path() + "/state.pb") == future.SerializeAsString()); // left for the operator
}

// ---- lock

TEST_CASE("lock_free_writesOurPid", "[state_store]")
{
	TempDir dir;
	auto lock = StateStore(dir.path()).lock();
	REQUIRE(lock.ok());
	CHECK(readRaw(dir.path() + "/brokerd.lock") == std::to_string(::getpid()) + "\n");
	CHECK((::fcntl(lock->get(), F_GETFD) & FD_CLOEXEC) != 0);
}

TEST_CASE("lock_heldByAnotherInstance_failsNamingTheHolderPid", "[state_store]")
{
	TempDir dir;
	StateStore store(dir.path());
	auto first = store.lock();
	REQUIRE(first.ok());
	// flock conflicts between open file descriptions, so a second open in this process stands
	// in for a second vfio-brokerd.
	auto second = StateStore(dir.path()).lock();
	REQUIRE_FALSE(second.ok());
	CHECK(second.error().code == EWOULDBLOCK);
	CHECK_THAT(second.error().message, Catch::Contains("pid " + std::to_string(::getpid())));
	CHECK_THAT(second.error().message, Catch::Contains(dir.path()));
}

TEST_CASE("lock_holderClosedItsFd_canBeTakenAgain", "[state_store]")
{
	TempDir dir;
	StateStore store(dir.path());
	{
		auto first = store.lock();
		REQUIRE(first.ok());
	}
	auto again = store.lock();
	CHECK(again.ok());
}

TEST_CASE("lock_missingStateDirectory_isCreatedPrivate", "[state_store]")
{
	TempDir dir;
	std::string stateDir = dir.path() + "/state";
	auto lock = StateStore(stateDir).lock();
	REQUIRE(lock.ok());
	struct stat st;
	REQUIRE(::stat(stateDir.c_str(), &st) == 0);
	CHECK((st.st_mode & 0777) == 0700);
}
