// SPDX-License-Identifier: Apache-2.0
// The state directory: brokerd.lock (flock + pid) and state.pb, replaced atomically on every save.
#include "control/state_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <string>
#include <string_view>

namespace vfio_broker::control {

namespace {

constexpr const char *kLockName = "brokerd.lock";
constexpr const char *kStateName = "state.pb";
// Temp files are "state.pb.tmp-<pid>-<n>"; any left in the directory are from a crashed save.
constexpr std::string_view kTempPrefix = "state.pb.tmp-";
constexpr uint32_t kVersion = 1;
constexpr off_t kMaxStateBytes = 64 << 20; // far beyond any real state; refuses a runaway file

Status writeAll(int fd, const std::string &data, const std::string &path)
{
	size_t off = 0;
	while (off < data.size()) {
		ssize_t n = ::write(fd, data.data() + off, data.size() - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errnoError(errno, "writing " + path);
		off += static_cast<size_t>(n);
	}
	return {};
}

Result<std::string> readAll(int fd, const std::string &path)
{
	struct stat st;
	if (::fstat(fd, &st) != 0)
		return errnoError(errno, "stat " + path);
	if (!S_ISREG(st.st_mode))
		return makeError(EINVAL, "%s is not a regular file", path.c_str());
	if (st.st_size > kMaxStateBytes)
		return makeError(EFBIG, "%s is %lld bytes, more than a state file can be (%lld)",
				 path.c_str(), static_cast<long long>(st.st_size),
				 static_cast<long long>(kMaxStateBytes));
	std::string data;
	char buf[65536];
	for (;;) {
		ssize_t n = ::read(fd, buf, sizeof(buf));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return errnoError(errno, "reading " + path);
		if (n == 0)
			break;
		data.append(buf, static_cast<size_t>(n));
		if (data.size() > static_cast<size_t>(kMaxStateBytes))
			return makeError(EFBIG, "%s grew past %lld bytes while being read", path.c_str(),
					 static_cast<long long>(kMaxStateBytes));
	}
	return data;
}

// The pid written by the holder, for the error message; "an unknown process" before it wrote it.
std::string holderOf(int fd)
{
	char buf[32];
	ssize_t n = ::pread(fd, buf, sizeof(buf) - 1, 0);
	if (n <= 0)
		return "an unknown process";
	buf[n] = '\0';
	char *end = nullptr;
	long pid = std::strtol(buf, &end, 10);
	if (end == buf || pid <= 0 || (*end != '\n' && *end != '\0'))
		return "an unknown process";
	return "pid " + std::to_string(pid);
}

// Remove temp files a crashed save left behind. Only called with the lock held, so no other
// instance is writing one right now.
void removeStaleTemps(const std::string &dir)
{
	DIR *d = ::opendir(dir.c_str());
	if (!d)
		return;
	while (struct dirent *entry = ::readdir(d)) {
		std::string_view name = entry->d_name;
		if (name.substr(0, kTempPrefix.size()) == kTempPrefix)
			::unlinkat(::dirfd(d), entry->d_name, 0);
	}
	::closedir(d);
}

} // namespace

Result<UniqueFd> StateStore::lock()
{
	if (::mkdir(dir_.c_str(), 0700) != 0 && errno != EEXIST)
		return errnoError(errno, "creating the state directory " + dir_);
	const std::string path = dir_ + "/" + kLockName;
	UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
	if (!fd)
		return errnoError(errno, "opening " + path);
	int rc;
	do {
		rc = ::flock(fd.get(), LOCK_EX | LOCK_NB);
	} while (rc != 0 && errno == EINTR);
	if (rc != 0) {
		if (errno == EWOULDBLOCK)
			return makeError(EWOULDBLOCK, "%s is locked by %s: another vfio-brokerd uses %s",
					 path.c_str(), holderOf(fd.get()).c_str(), dir_.c_str());
		return errnoError(errno, "locking " + path);
	}
	std::string pid = std::to_string(::getpid()) + "\n";
	if (::ftruncate(fd.get(), 0) != 0)
		return errnoError(errno, "truncating " + path);
	if (::pwrite(fd.get(), pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size()))
		return errnoError(errno, "writing our pid to " + path);
	removeStaleTemps(dir_);
	return fd;
}

Result<pb::BrokerState> StateStore::load() const
{
	const std::string path = dir_ + "/" + kStateName;
	UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
	if (!fd) {
		if (errno == ENOENT) {
			pb::BrokerState empty;
			empty.set_version(kVersion);
			return empty;
		}
		return errnoError(errno, "opening the state file " + path);
	}
	auto data = readAll(fd.get(), path);
	if (!data)
		return data.takeError();
	pb::BrokerState state;
	if (!state.ParseFromString(*data))
		return makeError(EBADMSG,
				 "the state file %s is corrupt (not a BrokerState); move it aside to start "
				 "with no assignments",
				 path.c_str());
	// Garbage often parses as unknown fields; the version then is 0, which no writer produces.
	if (state.version() != kVersion)
		return makeError(
			EBADMSG,
			"the state file %s has format version %u; this vfio-brokerd reads version %u "
			"(a corrupt file or one from another release)",
			path.c_str(), state.version(), kVersion);
	return state;
}

Status StateStore::save(const pb::BrokerState &state) const
{
	if (state.version() != 0 && state.version() != kVersion)
		return makeError(EINVAL, "refusing to save state version %u (this vfio-brokerd writes %u)",
				 state.version(), kVersion);
	std::string data;
	{
		pb::BrokerState copy = state;
		copy.set_version(kVersion);
		if (!copy.SerializeToString(&data))
			return makeError(EINVAL, "cannot serialise the broker state");
	}

	static std::atomic<unsigned> counter{ 0 };
	const std::string finalPath = dir_ + "/" + kStateName;
	const std::string tempPath = dir_ + "/" + std::string(kTempPrefix) + std::to_string(::getpid()) +
				     "-" + std::to_string(counter++);
	UniqueFd fd(::open(tempPath.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
	if (!fd)
		return errnoError(errno, "creating " + tempPath);
	auto discard = [&](Error err) -> Error {
		::unlink(tempPath.c_str());
		return err;
	};
	if (Status st = writeAll(fd.get(), data, tempPath); !st)
		return discard(st.takeError());
	if (::fsync(fd.get()) != 0)
		return discard(errnoError(errno, "fsync " + tempPath));
	if (::close(fd.release()) != 0 && errno != EINTR)
		return discard(errnoError(errno, "closing " + tempPath));
	if (::rename(tempPath.c_str(), finalPath.c_str()) != 0)
		return discard(errnoError(errno, "renaming " + tempPath + " to " + finalPath));

	// The rename is durable only once the directory is.
	UniqueFd dirFd(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
	if (!dirFd)
		return errnoError(errno, "opening " + dir_ + " to fsync it");
	if (::fsync(dirFd.get()) != 0)
		return errnoError(errno, "fsync " + dir_);
	return {};
}

} // namespace vfio_broker::control
