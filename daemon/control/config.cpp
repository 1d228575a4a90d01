// SPDX-License-Identifier: Apache-2.0
// Reads brokerd.conf and policy.conf (protobuf text format) and checks every field, naming file and line.
#include "control/config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <google/protobuf/io/tokenizer.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/text_format.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <set>
#include <vector>

#include "common/unique_fd.h"
#include "control/policy.h"

namespace vfio_broker::control {

namespace {

using google::protobuf::Descriptor;
using google::protobuf::FieldDescriptor;
using google::protobuf::TextFormat;
using ParseInfoTree = TextFormat::ParseInfoTree;

// A config file is hostile input too: nothing legitimate comes near this.
constexpr size_t kMaxFileBytes = 1u << 20;
// Enough errors to fix a file in one go without burying the first.
constexpr size_t kMaxErrors = 20;
constexpr uint32_t kMinTimeoutMs = 100;
constexpr uint32_t kMaxTimeoutMs = 600000;
// sizeof(sockaddr_un::sun_path) less the terminating NUL.
constexpr size_t kMaxSocketPath = 107;
constexpr uint32_t kMaxRestarts = 1000;

// Collects the parser's errors as "FILE:LINE:COL: message", 1-based. The tokenizer counts a tab
// as advancing to the next multiple of 8 columns, as an editor shows it.
class Collector : public google::protobuf::io::ErrorCollector
{
public:
	Collector(const std::string &file, const std::string &text) : file_(file), text_(text) {}

	void AddError(int line, google::protobuf::io::ColumnNumber column,
		      const std::string &message) override
	{
		std::string name;
		std::string text = reword(message, name);
		// The parser complains after reading the offending name; point at the name itself.
		if (!name.empty())
			locate(name, line, column);
		errors_.push_back(file_ + ":" + std::to_string(line + 1) + ":" + std::to_string(column + 1) +
				  ": " + text);
	}

	const std::vector<std::string> &errors() const { return errors_; }

private:
	class Quiet : public google::protobuf::io::ErrorCollector
	{
	public:
		void AddError(int, google::protobuf::io::ColumnNumber, const std::string &) override {}
	};

	// protobuf says `Message type "vfio_broker.v1.DaemonConfig" has no field named "x".` and
	// `Unknown enumeration value of "X" for field "f".`; `name` gets the offending token.
	static std::string reword(const std::string &message, std::string &name)
	{
		static const std::string kType = "Message type \"";
		static const std::string kField = "\" has no field named \"";
		static const std::string kEnum = "Unknown enumeration value of \"";
		if (message.rfind(kEnum, 0) == 0) {
			auto close = message.find('"', kEnum.size());
			if (close != std::string::npos)
				name = message.substr(kEnum.size(), close - kEnum.size());
			return message;
		}
		if (message.rfind(kType, 0) != 0)
			return message;
		auto mid = message.find(kField);
		if (mid == std::string::npos)
			return message;
		std::string type = message.substr(kType.size(), mid - kType.size());
		std::string rest = message.substr(mid + kField.size());
		auto close = rest.find('"');
		if (close == std::string::npos)
			return message;
		name = rest.substr(0, close);
		auto dot = type.rfind('.');
		if (dot != std::string::npos)
			type = type.substr(dot + 1);
		return "unknown field \"" + name + "\" (" + type + " has no such field)";
	}

	// The last token spelled `name` before (line, column), tokenized as the parser does (so
	// comments are skipped and tabs counted alike).
	void locate(const std::string &name, int &line, int &column) const
	{
		google::protobuf::io::ArrayInputStream input(text_.data(), static_cast<int>(text_.size()));
		Quiet quiet;
		google::protobuf::io::Tokenizer tokens(&input, &quiet);
		tokens.set_comment_style(google::protobuf::io::Tokenizer::SH_COMMENT_STYLE);
		int foundLine = line;
		int foundColumn = column;
		while (tokens.Next()) {
			const auto &t = tokens.current();
			if (t.line > line || (t.line == line && t.column >= column))
				break;
			if (t.text == name) {
				foundLine = t.line;
				foundColumn = t.column;
			}
		}
		line = foundLine;
		column = foundColumn;
	}

	std::string file_;
	const std::string &text_;
	std::vector<std::string> errors_;
};

bool hasControlChars(const std::string &s)
{
	for (unsigned char c : s)
		if (c < 0x20 || c == 0x7f)
			return true;
	return false;
}

bool validUtf8(const std::string &s);

// `s` in double quotes, with quotes, backslashes, control characters, and the bytes of a string
// that is not UTF-8 escaped: error messages stay one printable line.
std::string quote(const std::string &s)
{
	const bool utf8 = validUtf8(s);
	std::string out = "\"";
	for (unsigned char c : s) {
		if (c == '"' || c == '\\') {
			out += '\\';
			out += static_cast<char>(c);
		} else if (c < 0x20 || c == 0x7f || (c >= 0x80 && !utf8)) {
			char buf[8];
			std::snprintf(buf, sizeof(buf), "\\x%02x", c);
			out += buf;
		} else {
			out += static_cast<char>(c);
		}
	}
	return out + "\"";
}

// Semantic errors, each with the line of the field it is about.
class Checker
{
public:
	explicit Checker(const std::string &file) : file_(file) {}

	// `tree` is the message's location tree (nullptr when unknown); `index` is -1 for a
	// singular field; `fallbackLine` (0-based, -1 for none) is used when the field itself was
	// not written, e.g. the enclosing block of a missing required field.
	void fail(const ParseInfoTree *tree, const FieldDescriptor *field, int index, int fallbackLine,
		  const std::string &path, const std::string &message)
	{
		int line = lineOf(tree, field, index);
		if (line < 0)
			line = fallbackLine;
		std::string where = line < 0 ? file_ : file_ + ":" + std::to_string(line + 1);
		found_.push_back({ line, where + ": " + path + ": " + message });
	}

	static int lineOf(const ParseInfoTree *tree, const FieldDescriptor *field, int index)
	{
		if (!tree || !field)
			return -1;
		int line = tree->GetLocation(field, index).line;
		// The list form `f: [a, b]` records fewer locations than values: use the nearest one
		// before, which is on the line of the list or close to it.
		for (int i = index - 1; line < 0 && i >= 0; i--)
			line = tree->GetLocation(field, i).line;
		return line;
	}

	static bool written(const ParseInfoTree *tree, const FieldDescriptor *field, int index = -1)
	{
		return lineOf(tree, field, index) >= 0;
	}

	bool empty() const { return found_.empty(); }

	// In file order, as a reader fixes them; errors without a line last.
	std::vector<std::string> errors() const
	{
		auto sorted = found_;
		std::stable_sort(sorted.begin(), sorted.end(), [](const Found &a, const Found &b) {
			return static_cast<unsigned>(a.line) < static_cast<unsigned>(b.line);
		});
		std::vector<std::string> out;
		for (auto &e : sorted)
			out.push_back(std::move(e.text));
		return out;
	}

private:
	struct Found {
		int line; // 0-based, -1 when unknown
		std::string text;
	};
	std::string file_;
	std::vector<Found> found_;
};

Error joinErrors(const std::vector<std::string> &errors)
{
	std::string message;
	for (size_t i = 0; i < errors.size() && i < kMaxErrors; i++) {
		if (i)
			message += '\n';
		message += errors[i];
	}
	if (errors.size() > kMaxErrors)
		message += "\n(" + std::to_string(errors.size() - kMaxErrors) + " more errors)";
	return Error{ EINVAL, message };
}

// Parse strictly: unknown fields, unknown enum names and repeated singular fields are errors.
template <typename Message>
Result<Message> parseText(std::string_view text, const std::string &fileName, ParseInfoTree *tree)
{
	Message message;
	std::string owned(text);
	Collector collector(fileName, owned);
	TextFormat::Parser parser;
	parser.RecordErrorsTo(&collector);
	parser.WriteLocationsTo(tree);
	parser.AllowUnknownField(false);
	parser.AllowUnknownExtension(false);
	parser.AllowFieldNumber(false);
	parser.AllowPartialMessage(false);
	if (!parser.ParseFromString(owned, &message)) {
		if (collector.errors().empty())
			return Error{ EINVAL, fileName + ": cannot parse" };
		return joinErrors(collector.errors());
	}
	return message;
}

const FieldDescriptor *fieldOf(const Descriptor *d, int number)
{
	return d->FindFieldByNumber(number);
}

// Reads a whole config file, refusing what is not a regular file or is larger than the cap.
Result<std::string> readFile(const std::string &path, const char *what)
{
	std::string ctx = std::string("cannot read ") + what + " " + path;
	// O_NONBLOCK: opening a FIFO for reading must not wait for a writer.
	UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
	if (!fd)
		return errnoError(errno, ctx);
	struct stat st;
	if (::fstat(fd.get(), &st) < 0)
		return errnoError(errno, ctx);
	if (!S_ISREG(st.st_mode))
		return Error{ EINVAL, ctx + ": not a regular file" };
	if (static_cast<uint64_t>(st.st_size) > kMaxFileBytes)
		return Error{ EFBIG, ctx + ": larger than " + std::to_string(kMaxFileBytes) + " bytes" };
	std::string data;
	char buf[16384];
	for (;;) {
		ssize_t n = ::read(fd.get(), buf, sizeof(buf));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errnoError(errno, ctx);
		}
		if (n == 0)
			break;
		// The file may grow after fstat.
		if (data.size() + static_cast<size_t>(n) > kMaxFileBytes)
			return Error{ EFBIG,
				      ctx + ": larger than " + std::to_string(kMaxFileBytes) + " bytes" };
		data.append(buf, static_cast<size_t>(n));
	}
	return data;
}

// Whether `s` is well-formed UTF-8 (no overlong forms, surrogates or code points past U+10FFFF):
// proto3 strings must be, or their serialization fails on the far side of the API.
bool validUtf8(const std::string &s)
{
	size_t i = 0;
	while (i < s.size()) {
		auto c = static_cast<unsigned char>(s[i]);
		size_t n;
		uint32_t cp;
		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xe0) == 0xc0) {
			n = 1;
			cp = c & 0x1f;
		} else if ((c & 0xf0) == 0xe0) {
			n = 2;
			cp = c & 0x0f;
		} else if ((c & 0xf8) == 0xf0) {
			n = 3;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (i + n >= s.size())
			return false;
		for (size_t k = 1; k <= n; k++) {
			auto cc = static_cast<unsigned char>(s[i + k]);
			if ((cc & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (cc & 0x3f);
		}
		static const uint32_t kMin[] = { 0, 0x80, 0x800, 0x10000 };
		if (cp < kMin[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return false;
		i += n + 1;
	}
	return true;
}

// Every string of the message, nested ones included: UTF-8, without control characters (no
// field of these files has a use for them, and they would garble logs and paths).
void checkStrings(Checker &check, const google::protobuf::Message &message, const ParseInfoTree *tree,
		  const std::string &prefix, int fallbackLine)
{
	const auto *reflection = message.GetReflection();
	std::vector<const FieldDescriptor *> fields;
	reflection->ListFields(message, &fields);
	for (const FieldDescriptor *field : fields) {
		std::string name = prefix + field->name();
		int count = field->is_repeated() ? reflection->FieldSize(message, field) : 1;
		for (int i = 0; i < count; i++) {
			int index = field->is_repeated() ? i : -1;
			std::string path = field->is_repeated() ? name + "[" + std::to_string(i) + "]" : name;
			if (field->type() == FieldDescriptor::TYPE_STRING) {
				std::string value = field->is_repeated()
							    ? reflection->GetRepeatedString(message, field, i)
							    : reflection->GetString(message, field);
				if (!validUtf8(value))
					check.fail(tree, field, index, fallbackLine, path,
						   quote(value) + " is not valid UTF-8");
				else if (hasControlChars(value))
					check.fail(tree, field, index, fallbackLine, path,
						   quote(value) + " contains control characters");
			} else if (field->type() == FieldDescriptor::TYPE_MESSAGE) {
				const auto &nested =
					field->is_repeated()
						? reflection->GetRepeatedMessage(message, field, i)
						: reflection->GetMessage(message, field);
				const ParseInfoTree *nestedTree =
					tree ? tree->GetTreeForNested(field, index) : nullptr;
				checkStrings(check, nested, nestedTree, path + ".",
					     Checker::lineOf(tree, field, index));
			}
		}
	}
}

// ---- DaemonConfig ----

bool validGroupName(const std::string &name)
{
	// What useradd/groupadd and systemd accept: a letter or '_' first, then letters, digits,
	// '_', '-', '.'; at most 32 characters.
	if (name.empty() || name.size() > 32)
		return false;
	auto c0 = static_cast<unsigned char>(name[0]);
	if (!std::isalpha(c0) && c0 != '_')
		return false;
	for (unsigned char c : name)
		if (!std::isalnum(c) && c != '_' && c != '-' && c != '.')
			return false;
	return true;
}

bool validUnitTemplate(const std::string &unit)
{
	static const std::string kSuffix = "@.service";
	if (unit.size() <= kSuffix.size() ||
	    unit.compare(unit.size() - kSuffix.size(), kSuffix.size(), kSuffix) != 0)
		return false;
	for (size_t i = 0; i < unit.size() - kSuffix.size(); i++) {
		auto c = static_cast<unsigned char>(unit[i]);
		if (!std::isalnum(c) && c != ':' && c != '_' && c != '.' && c != '-' && c != '\\')
			return false;
	}
	return true;
}

bool validSimulatedName(const std::string &name)
{
	if (name.rfind("sim:", 0) != 0 || name.size() == 4)
		return false;
	for (size_t i = 4; i < name.size(); i++) {
		auto c = static_cast<unsigned char>(name[i]);
		if (!std::isalnum(c) && c != '_' && c != '-' && c != '.')
			return false;
	}
	return true;
}

// "host:port" or "[v6]:port" with a port in 1..65535.
bool validHostPort(const std::string &address)
{
	auto colon = address.rfind(':');
	if (colon == std::string::npos || colon == 0 || colon + 1 == address.size())
		return false;
	std::string host = address.substr(0, colon);
	std::string port = address.substr(colon + 1);
	if (port.size() > 5)
		return false;
	for (char c : port)
		if (!std::isdigit(static_cast<unsigned char>(c)))
			return false;
	unsigned long p = std::stoul(port);
	if (p == 0 || p > 65535)
		return false;
	if (host.front() == '[')
		return host.size() > 2 && host.back() == ']';
	if (host.find(':') != std::string::npos)
		return false; // an IPv6 address needs brackets
	for (unsigned char c : host)
		if (std::isspace(c) || c < 0x20 || c == 0x7f)
			return false;
	return true;
}

void checkAbsolutePath(Checker &check, const ParseInfoTree *tree, const FieldDescriptor *field,
		       const std::string &value, const std::string &path, int fallbackLine = -1)
{
	if (value.empty()) {
		if (Checker::written(tree, field))
			check.fail(tree, field, -1, fallbackLine, path,
				   "must not be empty (leave it out for the default)");
		return;
	}
	if (value[0] != '/')
		check.fail(tree, field, -1, fallbackLine, path, quote(value) + " is not an absolute path");
}

void checkTimeout(Checker &check, const ParseInfoTree *tree, const FieldDescriptor *field, uint32_t value)
{
	if (value == 0 && !Checker::written(tree, field))
		return; // the default
	if (value < kMinTimeoutMs || value > kMaxTimeoutMs)
		check.fail(tree, field, -1, -1, field->name(),
			   "must be between " + std::to_string(kMinTimeoutMs) + " and " +
				   std::to_string(kMaxTimeoutMs) + " (got " + std::to_string(value) + ")");
}

void checkTcp(Checker &check, const pb::TcpListener &tcp, const ParseInfoTree *tree, int blockLine)
{
	const Descriptor *d = pb::TcpListener::descriptor();
	auto addressField = fieldOf(d, pb::TcpListener::kAddressFieldNumber);
	auto certField = fieldOf(d, pb::TcpListener::kTlsCertFileFieldNumber);
	auto keyField = fieldOf(d, pb::TcpListener::kTlsKeyFileFieldNumber);
	auto caField = fieldOf(d, pb::TcpListener::kTlsClientCaFileFieldNumber);

	if (tcp.address().empty())
		check.fail(tree, addressField, -1, blockLine, "tcp.address", "required, as host:port");
	else if (!validHostPort(tcp.address()))
		check.fail(tree, addressField, -1, blockLine, "tcp.address",
			   quote(tcp.address()) + " is not host:port (IPv6 as [addr]:port)");
	// TLS is the only transport offered over TCP: there is no peer credential to check.
	if (tcp.tls_cert_file().empty())
		check.fail(tree, certField, -1, blockLine, "tcp.tls_cert_file",
			   "required: the TCP listener is TLS-only");
	else
		checkAbsolutePath(check, tree, certField, tcp.tls_cert_file(), "tcp.tls_cert_file",
				  blockLine);
	if (tcp.tls_key_file().empty())
		check.fail(tree, keyField, -1, blockLine, "tcp.tls_key_file",
			   "required: the TCP listener is TLS-only");
	else
		checkAbsolutePath(check, tree, keyField, tcp.tls_key_file(), "tcp.tls_key_file", blockLine);
	checkAbsolutePath(check, tree, caField, tcp.tls_client_ca_file(), "tcp.tls_client_ca_file",
			  blockLine);
}

void checkDaemonConfig(Checker &check, const pb::DaemonConfig &c, const ParseInfoTree *tree)
{
	using C = pb::DaemonConfig;
	const Descriptor *d = C::descriptor();
	auto f = [d](int number) {
		return fieldOf(d, number);
	};

	struct PathField {
		int number;
		const std::string &value;
	};
	for (const PathField &p : { PathField{ C::kControlSocketFieldNumber, c.control_socket() },
				    PathField{ C::kStateDirFieldNumber, c.state_dir() },
				    PathField{ C::kRuntimeDirFieldNumber, c.runtime_dir() },
				    PathField{ C::kPolicyFileFieldNumber, c.policy_file() },
				    PathField{ C::kDeviceDaemonFieldNumber, c.device_daemon() },
				    PathField{ C::kSysfsRootFieldNumber, c.sysfs_root() } })
		checkAbsolutePath(check, tree, f(p.number), p.value, f(p.number)->name());
	if (c.control_socket().size() > kMaxSocketPath)
		check.fail(tree, f(C::kControlSocketFieldNumber), -1, -1, "control_socket",
			   "longer than " + std::to_string(kMaxSocketPath) +
				   " bytes, the limit of a Unix socket path");

	if (!c.admin_group().empty() && !validGroupName(c.admin_group()))
		check.fail(tree, f(C::kAdminGroupFieldNumber), -1, -1, "admin_group",
			   quote(c.admin_group()) +
				   " is not a group name (a letter or _, then letters, digits, _ - .; " +
				   "at most 32)");

	if (!pb::LaunchMethod_IsValid(c.launch_method()))
		check.fail(tree, f(C::kLaunchMethodFieldNumber), -1, -1, "launch_method",
			   std::to_string(c.launch_method()) +
				   " is not LAUNCH_METHOD_SPAWN or LAUNCH_METHOD_SYSTEMD");

	const auto unitField = f(C::kSystemdUnitTemplateFieldNumber);
	if (!c.systemd_unit_template().empty() || Checker::written(tree, unitField)) {
		if (!validUnitTemplate(c.systemd_unit_template()))
			check.fail(tree, unitField, -1, -1, "systemd_unit_template",
				   quote(c.systemd_unit_template()) +
					   " is not a template unit name like vfio-broker-device@.service");
	}

	const auto systemctlField = f(C::kSystemctlFieldNumber);
	if (!c.systemctl().empty() || Checker::written(tree, systemctlField)) {
		const std::string &s = c.systemctl();
		if (s.empty())
			check.fail(tree, systemctlField, -1, -1, "systemctl",
				   "must not be empty (leave it out for the default)");
		else if (s.find(' ') != std::string::npos)
			check.fail(tree, systemctlField, -1, -1, "systemctl",
				   quote(s) + " is not a program: a name found on PATH or an absolute path, "
					      "no arguments");
		else if (s.find('/') != std::string::npos && s[0] != '/')
			check.fail(tree, systemctlField, -1, -1, "systemctl",
				   quote(s) + " is neither a name found on PATH nor an absolute path");
	}

	const auto simField = f(C::kSimulatedDevicesFieldNumber);
	std::set<std::string> sims;
	for (int i = 0; i < c.simulated_devices_size(); i++) {
		const std::string &s = c.simulated_devices(i);
		std::string path = "simulated_devices[" + std::to_string(i) + "]";
		if (!validSimulatedName(s))
			check.fail(tree, simField, i, -1, path,
				   quote(s) + " is not a simulated device like \"sim:edu\"");
		else if (!sims.insert(s).second)
			check.fail(tree, simField, i, -1, path, quote(s) + " is listed twice");
	}

	checkTimeout(check, tree, f(C::kDaemonReadyTimeoutMsFieldNumber), c.daemon_ready_timeout_ms());
	checkTimeout(check, tree, f(C::kBindTimeoutMsFieldNumber), c.bind_timeout_ms());

	if (c.has_tcp()) {
		const auto tcpField = f(C::kTcpFieldNumber);
		const ParseInfoTree *tcpTree = tree ? tree->GetTreeForNested(tcpField, -1) : nullptr;
		checkTcp(check, c.tcp(), tcpTree, Checker::lineOf(tree, tcpField, -1));
	}

	// The broker passes these itself; a second copy would fight over the device or socket.
	static const std::set<std::string> kReserved = { "--device", "--socket", "--fd", "--ready-fd" };
	const auto argsField = f(C::kDeviceDaemonArgsFieldNumber);
	for (int i = 0; i < c.device_daemon_args_size(); i++) {
		const std::string &a = c.device_daemon_args(i);
		std::string path = "device_daemon_args[" + std::to_string(i) + "]";
		if (a.empty())
			check.fail(tree, argsField, i, -1, path, "must not be empty");
		else if (kReserved.count(a.substr(0, a.find('='))))
			check.fail(tree, argsField, i, -1, path,
				   quote(a) + " is set by the broker for every device daemon and may not be "
					      "given here");
	}
}

// ---- BoardPolicy ----

bool validRuleName(const std::string &name)
{
	if (name.size() > 64)
		return false;
	for (unsigned char c : name)
		if (!std::isalnum(c) && c != '_' && c != '-' && c != '.' && c != ':' && c != '@' && c != '+')
			return false;
	return true;
}

// What the API accepts as a VM name (Broker::validateVmName): a name it refuses could never match.
bool validVmName(const std::string &vm)
{
	if (vm.empty() || vm.size() > 64)
		return false;
	for (unsigned char c : vm)
		if (!std::isalnum(c) && c != '-' && c != '_' && c != '.')
			return false;
	return true;
}

void checkRule(Checker &check, const pb::DeviceRule &rule, int index, const ParseInfoTree *tree, int ruleLine,
	       std::set<std::string> &names)
{
	using R = pb::DeviceRule;
	const Descriptor *d = R::descriptor();
	auto f = [d](int number) {
		return fieldOf(d, number);
	};
	std::string prefix = "rules[" + std::to_string(index) + "]";
	if (!rule.name().empty() && validRuleName(rule.name()))
		prefix += " (" + quote(rule.name()) + ")";
	auto fail = [&](int number, int fieldIndex, const std::string &message) {
		const FieldDescriptor *field = number ? f(number) : nullptr;
		std::string path = field ? prefix + "." + field->name() : prefix;
		if (field && fieldIndex >= 0)
			path += "[" + std::to_string(fieldIndex) + "]";
		check.fail(tree, field, fieldIndex, ruleLine, path, message);
	};

	if (!rule.name().empty()) {
		if (!validRuleName(rule.name()))
			fail(R::kNameFieldNumber, -1,
			     quote(rule.name()) +
				     " is not a rule name (letters, digits and _ - . : @ +; at most 64)");
		else if (!names.insert(rule.name()).second)
			fail(R::kNameFieldNumber, -1,
			     quote(rule.name()) + " names an earlier rule too; names must be unique");
	}

	if (rule.pci_address().empty() && rule.vendor_device().empty() && rule.sysfs_path().empty() &&
	    rule.dt_path().empty() && rule.dt_compatible().empty() && rule.simulated().empty())
		fail(0, -1,
		     "matches nothing: set at least one of pci_address, vendor_device, sysfs_path, dt_path, "
		     "dt_compatible, simulated");

	if (!rule.pci_address().empty() && !normalizePciAddress(rule.pci_address()))
		fail(R::kPciAddressFieldNumber, -1,
		     quote(rule.pci_address()) + " is not a PCI address like 0000:01:00.0");
	if (!rule.vendor_device().empty() && !parseVendorDevice(rule.vendor_device()))
		fail(R::kVendorDeviceFieldNumber, -1,
		     quote(rule.vendor_device()) + " is not a PCI vendor:device in hex like 8086:10d3");
	if (!rule.sysfs_path().empty() && rule.sysfs_path()[0] != '/')
		fail(R::kSysfsPathFieldNumber, -1,
		     quote(rule.sysfs_path()) +
			     " is not an absolute sysfs path like /sys/bus/pci/devices/0000:01:00.0");
	if (!rule.dt_path().empty() && rule.dt_path()[0] != '/')
		fail(R::kDtPathFieldNumber, -1,
		     quote(rule.dt_path()) + " is not a device-tree node path like /pl031@9010000");
	if (!rule.dt_compatible().empty()) {
		if (rule.dt_compatible().find(' ') != std::string::npos)
			fail(R::kDtCompatibleFieldNumber, -1,
			     quote(rule.dt_compatible()) + " is not a compatible string like \"arm,pl031\"");
	}
	if (!rule.simulated().empty() && !validSimulatedName(rule.simulated()))
		fail(R::kSimulatedFieldNumber, -1,
		     quote(rule.simulated()) + " is not a simulated device like \"sim:edu\"");

	std::set<std::string> vms;
	for (int i = 0; i < rule.allowed_vms_size(); i++) {
		const std::string &vm = rule.allowed_vms(i);
		if (!validVmName(vm))
			fail(R::kAllowedVmsFieldNumber, i,
			     quote(vm) + " is not a VM name (1 to 64 letters, digits, '-', '_' or '.')");
		else if (!vms.insert(vm).second)
			fail(R::kAllowedVmsFieldNumber, i, quote(vm) + " is listed twice");
	}

	// Without an IOMMU a device can DMA anywhere; the broker only assigns such a device to an
	// identity-mapped VM, so a rule allowing one without the other allows nothing.
	if (rule.allow_no_iommu() && !rule.allow_identity_mapping())
		fail(R::kAllowNoIommuFieldNumber, -1,
		     "needs allow_identity_mapping: true (a device without an IOMMU is only assigned "
		     "identity-mapped)");

	// A PCI function can always master the bus: only a device-tree device can be taken at its
	// word (and the conflict checks still refuse one whose node has "iommus").
	if (rule.no_dma() && (!rule.pci_address().empty() || !rule.vendor_device().empty()))
		fail(R::kNoDmaFieldNumber, -1,
		     "is for platform and AMBA devices (matched by dt_path, dt_compatible or sysfs_path); "
		     "a PCI device can always do DMA");

	if (!pb::DeassignAction_IsValid(rule.on_deassign()))
		fail(R::kOnDeassignFieldNumber, -1,
		     std::to_string(rule.on_deassign()) +
			     " is not DEASSIGN_ACTION_RESTORE or DEASSIGN_ACTION_QUARANTINE");
	if (!pb::DaemonExitAction_IsValid(rule.on_daemon_exit()))
		fail(R::kOnDaemonExitFieldNumber, -1,
		     std::to_string(rule.on_daemon_exit()) +
			     " is not DAEMON_EXIT_ACTION_RESTART or DAEMON_EXIT_ACTION_FAIL");
	if (rule.max_restarts() > kMaxRestarts)
		fail(R::kMaxRestartsFieldNumber, -1, "must be at most " + std::to_string(kMaxRestarts));
}

void checkPolicy(Checker &check, const pb::BoardPolicy &policy, const ParseInfoTree *tree)
{
	const auto rulesField = fieldOf(pb::BoardPolicy::descriptor(), pb::BoardPolicy::kRulesFieldNumber);
	std::set<std::string> names;
	for (int i = 0; i < policy.rules_size(); i++) {
		const ParseInfoTree *ruleTree = tree ? tree->GetTreeForNested(rulesField, i) : nullptr;
		checkRule(check, policy.rules(i), i, ruleTree, Checker::lineOf(tree, rulesField, i), names);
	}
}

} // namespace

void applyDefaults(pb::DaemonConfig &config)
{
	if (config.control_socket().empty())
		config.set_control_socket("/run/vfio-broker/control.sock");
	if (config.state_dir().empty())
		config.set_state_dir("/var/lib/vfio-broker");
	if (config.runtime_dir().empty())
		config.set_runtime_dir("/run/vfio-broker");
	if (config.policy_file().empty())
		config.set_policy_file("/etc/vfio-broker/policy.conf");
	if (config.device_daemon().empty())
		config.set_device_daemon("/usr/sbin/vfio-broker-device");
	if (config.launch_method() == pb::LAUNCH_METHOD_UNSPECIFIED)
		config.set_launch_method(pb::LAUNCH_METHOD_SPAWN);
	if (config.systemd_unit_template().empty())
		config.set_systemd_unit_template("vfio-broker-device@.service");
	if (config.sysfs_root().empty())
		config.set_sysfs_root("/sys");
	if (config.daemon_ready_timeout_ms() == 0)
		config.set_daemon_ready_timeout_ms(5000);
	if (config.bind_timeout_ms() == 0)
		config.set_bind_timeout_ms(2000);
	if (config.systemctl().empty())
		config.set_systemctl("systemctl");
}

Result<pb::DaemonConfig> parseDaemonConfig(std::string_view text, const std::string &fileName)
{
	ParseInfoTree tree;
	auto parsed = parseText<pb::DaemonConfig>(text, fileName, &tree);
	if (!parsed)
		return parsed.takeError();
	Checker check(fileName);
	checkStrings(check, *parsed, &tree, "", -1);
	if (check.empty())
		checkDaemonConfig(check, *parsed, &tree);
	if (!check.empty())
		return joinErrors(check.errors());
	applyDefaults(*parsed);
	return parsed;
}

Result<pb::DaemonConfig> loadDaemonConfig(const std::string &path)
{
	auto text = readFile(path, "daemon config");
	if (!text)
		return text.takeError();
	return parseDaemonConfig(*text, path);
}

Result<pb::BoardPolicy> parsePolicy(std::string_view text, const std::string &fileName)
{
	ParseInfoTree tree;
	auto parsed = parseText<pb::BoardPolicy>(text, fileName, &tree);
	if (!parsed)
		return parsed.takeError();
	Checker check(fileName);
	checkStrings(check, *parsed, &tree, "", -1);
	if (check.empty())
		checkPolicy(check, *parsed, &tree);
	if (!check.empty())
		return joinErrors(check.errors());
	return parsed;
}

Result<pb::BoardPolicy> loadPolicy(const std::string &path)
{
	auto text = readFile(path, "board policy");
	if (!text)
		return text.takeError();
	return parsePolicy(*text, path);
}

} // namespace vfio_broker::control
