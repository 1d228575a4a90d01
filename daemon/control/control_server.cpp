// SPDX-License-Identifier: Apache-2.0
// Control socket: own accept loop with peer-credential checks, then AddInsecureChannelFromFd.
#include "control/control_server.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_posix.h>

#include "common/log.h"

namespace vfio_broker::control {

namespace {

// Upper bound of concurrent RPC threads: a caller cannot make us spawn more.
constexpr int kMaxRpcThreads = 32;
// Connections waiting in the listen backlog.
constexpr int kBacklog = 16;

Result<std::string> readFile(const std::string &path)
{
	std::ifstream in(path);
	if (!in)
		return errnoError(errno, "reading " + path);
	std::stringstream ss;
	ss << in.rdbuf();
	return ss.str();
}

// Create the socket's directory if needed (mode and group set only on a directory we create:
// the runtime directory is shared with device sockets that VMM users must reach). An existing
// directory others may write to is refused: they could replace our socket.
Status makeDirs(const std::string &path, mode_t mode, std::optional<gid_t> gid)
{
	bool created = false;
	for (size_t pos = 1; pos <= path.size(); pos++) {
		if (pos != path.size() && path[pos] != '/')
			continue;
		std::string cur = path.substr(0, pos);
		if (::mkdir(cur.c_str(), 0755) == 0)
			created = pos == path.size();
		else if (errno != EEXIST)
			return errnoError(errno, "creating " + cur);
	}
	if (created) {
		if (::chmod(path.c_str(), mode) < 0)
			return errnoError(errno, "chmod " + path);
		if (gid && ::chown(path.c_str(), -1, *gid) < 0)
			return errnoError(errno, "chown " + path);
		return {};
	}
	struct stat st;
	if (::stat(path.c_str(), &st) < 0)
		return errnoError(errno, "stat " + path);
	if (st.st_mode & (S_IWGRP | S_IWOTH))
		return makeError(EPERM, "%s is writable by group or others: anyone there could replace the "
				 "control socket", path.c_str());
	return {};
}

} // namespace

ControlServer::ControlServer(Broker &broker) : broker_(broker)
{
	const std::string &group = broker_.config().admin_group();
	if (!group.empty()) {
		if (::group *gr = ::getgrnam(group.c_str()))
			adminGid_ = gr->gr_gid;
		else
			LOG_WARN("admin group \"%s\" does not exist: only root may use the control socket",
				 group.c_str());
	}
}

ControlServer::~ControlServer()
{
	shutdown(std::chrono::milliseconds(0));
}

bool ControlServer::authorised(const ucred &cred, std::optional<gid_t> adminGid)
{
	if (cred.uid == 0)
		return true;
	if (!adminGid)
		return false;
	if (cred.gid == *adminGid)
		return true;
	// Supplementary groups of the caller's user.
	passwd *pw = ::getpwuid(cred.uid);
	if (!pw)
		return false;
	int n = 64;
	std::vector<gid_t> groups(n);
	if (::getgrouplist(pw->pw_name, pw->pw_gid, groups.data(), &n) < 0) {
		groups.resize(n);
		if (::getgrouplist(pw->pw_name, pw->pw_gid, groups.data(), &n) < 0)
			return false;
	}
	groups.resize(n);
	return std::find(groups.begin(), groups.end(), *adminGid) != groups.end();
}

Caller ControlServer::callerOf(const grpc::ServerContext &ctx)
{
	Caller c;
	std::string peer = ctx.peer();
	if (peer.rfind("fd:", 0) == 0) {
		int fd = std::atoi(peer.c_str() + 3);
		std::lock_guard<std::mutex> lock(peersLock_);
		if (auto it = peers_.find(fd); it != peers_.end()) {
			c.pid = it->second.pid;
			c.uid = it->second.uid;
			c.gid = it->second.gid;
		}
	}
	return c;
}

Status ControlServer::start()
{
	const pb::DaemonConfig &cfg = broker_.config();
	const std::string &path = cfg.control_socket();
	std::string dir = path.substr(0, path.rfind('/'));
	if (!dir.empty())
		if (Status s = makeDirs(dir, adminGid_ ? 0750 : 0700, adminGid_); !s)
			return s;

	sockaddr_un addr{};
	addr.sun_family = AF_UNIX;
	if (path.size() >= sizeof(addr.sun_path))
		return makeError(ENAMETOOLONG, "control socket path is too long: %s", path.c_str());
	std::memcpy(addr.sun_path, path.c_str(), path.size());
	// The single-instance lock only covers our state directory: a broker with another
	// state_dir may serve this very path. A socket that still accepts connections is not
	// stale, and taking it over would orphan that broker; one that refuses them is.
	if (Supervisor::socketAnswers(path))
		return makeError(EADDRINUSE, "%s is served by another process (another vfio-brokerd?); not taking it over",
				 path.c_str());
	::unlink(path.c_str());
	listenFd_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
	if (!listenFd_)
		return errnoError("socket");
	mode_t old = ::umask(0177);
	int rc = ::bind(listenFd_.get(), reinterpret_cast<sockaddr *>(&addr), sizeof(addr));
	int err = errno;
	::umask(old);
	if (rc < 0)
		return errnoError(err, "bind " + path);
	if (adminGid_ && (::chown(path.c_str(), -1, *adminGid_) < 0 || ::chmod(path.c_str(), 0660) < 0))
		return errnoError(errno, "setting the group of " + path);
	if (::listen(listenFd_.get(), kBacklog) < 0)
		return errnoError(errno, "listen " + path);

	grpc::EnableDefaultHealthCheckService(true);
	grpc::reflection::InitProtoReflectionServerBuilderPlugin();
	service_ = std::make_unique<BrokerServiceImpl>(
		broker_, [this](const grpc::ServerContext &ctx) { return callerOf(ctx); });
	grpc::ServerBuilder builder;
	builder.RegisterService(service_.get());
	grpc::ResourceQuota quota("vfio-brokerd");
	quota.SetMaxThreads(kMaxRpcThreads);
	builder.SetResourceQuota(quota);
	builder.SetMaxReceiveMessageSize(1 << 20);
	if (cfg.has_tcp() && !cfg.tcp().address().empty()) {
		auto cert = readFile(cfg.tcp().tls_cert_file());
		auto key = readFile(cfg.tcp().tls_key_file());
		if (!cert || !key)
			return (!cert ? cert : key).takeError();
		grpc::SslServerCredentialsOptions ssl;
		ssl.pem_key_cert_pairs.push_back({ *key, *cert });
		if (!cfg.tcp().tls_client_ca_file().empty()) {
			auto ca = readFile(cfg.tcp().tls_client_ca_file());
			if (!ca)
				return ca.takeError();
			ssl.pem_root_certs = *ca;
			ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
		}
		builder.AddListeningPort(cfg.tcp().address(), grpc::SslServerCredentials(ssl));
	}
	server_ = builder.BuildAndStart();
	if (!server_)
		return makeError(EIO, "the gRPC server did not start (see the gRPC log above)");
	server_->GetHealthCheckService()->SetServingStatus("vfio_broker.v1.BrokerService", true);

	wakeFd_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
	acceptor_ = std::thread([this] { acceptLoop(); });
	return {};
}

void ControlServer::acceptLoop()
{
	for (;;) {
		pollfd fds[2] = { { listenFd_.get(), POLLIN, 0 }, { wakeFd_.get(), POLLIN, 0 } };
		if (::poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			LOG_ERROR("control socket poll: %s", strerror(errno));
			return;
		}
		if (fds[1].revents)
			return;
		// gRPC needs the fd non-blocking, or calls stall until their deadline.
		int fd = ::accept4(listenFd_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0)
			continue;
		ucred cred{};
		socklen_t len = sizeof(cred);
		if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0 || !authorised(cred, adminGid_)) {
			LOG_WARN("refused a control connection from pid %d uid %u gid %u: not root or in the admin group",
				 cred.pid, cred.uid, cred.gid);
			::close(fd);
			continue;
		}
		{
			std::lock_guard<std::mutex> lock(peersLock_);
			peers_[fd] = cred; // a reused fd number is overwritten before gRPC sees it
		}
		grpc::AddInsecureChannelFromFd(server_.get(), fd);
	}
}

void ControlServer::shutdown(std::chrono::milliseconds grace)
{
	if (wakeFd_) {
		uint64_t one = 1;
		(void)!::write(wakeFd_.get(), &one, sizeof(one));
	}
	if (acceptor_.joinable())
		acceptor_.join();
	broker_.events().closeAll();
	if (server_) {
		server_->Shutdown(std::chrono::system_clock::now() + grace);
		server_.reset();
	}
	if (listenFd_) {
		::unlink(broker_.config().control_socket().c_str());
		listenFd_.reset();
	}
}

} // namespace vfio_broker::control
