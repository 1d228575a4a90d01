// SPDX-License-Identifier: Apache-2.0
// The assignment conflict checks: every reason an Assign would be refused, each in a sentence.
#include "control/conflicts.h"

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <tuple>
#include <unordered_map>
#include <unordered_set>

#include "device/vfio_sysfs.h"

namespace vfio_broker::control {

namespace {

bool isSimulated(const pb::Device &device)
{
	return device.kind() == pb::DEVICE_KIND_SIMULATED || device.id().rfind("sim:", 0) == 0;
}

// Group members are device ids; accept a bare PCI address too.
std::string memberId(const std::string &member)
{
	for (const char *prefix : { "pci:", "platform:", "amba:", "sim:" })
		if (member.rfind(prefix, 0) == 0)
			return member;
	if (auto pci = normalizePciAddress(member))
		return "pci:" + *pci;
	return member;
}

bool hasIommu(const pb::Device &device)
{
	return device.has_iommu_group() && device.iommu_group().number() >= 0 &&
	       !device.iommu_group().no_iommu();
}

// "assigned to vm-b", "quarantined after vm-b", ...: how a held device stands with its VM.
std::string heldPhrase(const pb::Device &held)
{
	switch (held.state()) {
	case pb::DEVICE_STATE_QUARANTINED:
		return "quarantined after " + held.vm();
	case pb::DEVICE_STATE_FAILED:
		return "held by " + held.vm() + " (its device daemon failed)";
	case pb::DEVICE_STATE_ASSIGNED:
		return "assigned to " + held.vm();
	default:
		return "held by " + held.vm();
	}
}

std::string hex(uint64_t v)
{
	char buf[24];
	std::snprintf(buf, sizeof(buf), "0x%" PRIx64, v);
	return buf;
}

// The interrupt line, for sharing: the controller and its specifier cells, except that a GIC
// specifier's trigger flags (3 or 4 cells, the first 0 = SPI or 1 = PPI, the third the flags;
// Documentation/devicetree/bindings/interrupt-controller/arm,gic*.yaml) do not make another line:
// two nodes naming SPI 33 with different flags share SPI 33. The cell count stays in the key, so
// a specifier of another format never meets a GIC one. Leaving out a cell can only join lines
// (refuse more), never split one.
std::string interruptKey(const pb::Interrupt &irq)
{
	std::string key = irq.controller();
	key += '\0';
	const int cells = irq.specifier_size();
	key += std::to_string(cells) + ':';
	const bool gic = (cells == 3 || cells == 4) && irq.specifier(0) <= 1;
	for (int i = 0; i < cells; i++) {
		if (gic && i == 2)
			continue;
		key += std::to_string(irq.specifier(i));
		key += ',';
	}
	return key;
}

std::string interruptText(const pb::Interrupt &irq)
{
	std::string text = irq.controller() + " <";
	for (int i = 0; i < irq.specifier_size(); i++) {
		if (i)
			text += ' ';
		text += std::to_string(irq.specifier(i));
	}
	return text + ">";
}

std::string streamKey(const pb::StreamId &sid)
{
	return sid.iommu() + '\0' + std::to_string(sid.stream_id());
}

std::string quoteList(const google::protobuf::RepeatedPtrField<std::string> &items)
{
	std::string out;
	for (int i = 0; i < items.size(); i++)
		out += (i ? ", \"" : "\"") + items[i] + "\"";
	return out;
}

// What stands in the way of giving a whole IOMMU group to the VM, worked out once per group.
struct GroupObstacle {
	pb::ConflictReason reason;
	std::string member;
	std::string otherVm;
	std::string why; // ", which is ..."
};

// Conflicts naming another device, per requested device and reason. Legacy interrupt lines in
// particular are shared by many devices; past this many the rest are counted in one conflict,
// so the answer (and the work) stays bounded by requested + held devices.
constexpr size_t kMaxNamedOthers = 16;

class Checks
{
public:
	explicit Checks(const ConflictInput &in) : in_(in), policy_(in.policy ? *in.policy : emptyPolicy_) {}

	std::vector<pb::Conflict> run()
	{
		dedupRequest();
		indexHeld();
		for (const std::string &id : unique_)
			checkDevice(id);
		if (in_.options.identity_mapping())
			checkMmioOverlaps();
		addUnnamed();
		return sorted();
	}

private:
	void add(pb::ConflictReason reason, const std::string &device, const std::string &message,
		 const std::string &otherDevice = "", const std::string &otherVm = "")
	{
		pb::Conflict c;
		c.set_reason(reason);
		c.set_device_id(device);
		c.set_other_device_id(otherDevice);
		c.set_other_vm(otherVm);
		c.set_message(message);
		out_.push_back(std::move(c));
	}

	// Whether another conflict of this device and reason may name its other device; counts
	// those that may not.
	bool roomFor(const std::string &device, pb::ConflictReason reason)
	{
		size_t &n = named_[{ device, reason }];
		if (n < kMaxNamedOthers) {
			n++;
			return true;
		}
		unnamed_[{ device, reason }]++;
		return false;
	}

	void addUnnamed()
	{
		for (const auto &[key, count] : unnamed_) {
			if (count == 0)
				continue;
			const auto &[device, reason] = key;
			std::string kind = reason == pb::CONFLICT_REASON_SHARED_INTERRUPT ? "shared-interrupt"
					   : reason == pb::CONFLICT_REASON_SHARED_STREAM_ID
						   ? "shared-stream-ID"
						   : "MMIO-overlap";
			add(reason, device,
			    device + " has " + std::to_string(count) + " more " + kind + " conflict" +
				    (count == 1 ? "" : "s") + " (only the first " +
				    std::to_string(kMaxNamedOthers) + " are listed)");
		}
	}

	void dedupRequest()
	{
		std::unordered_set<std::string> reported;
		for (const std::string &id : in_.deviceIds) {
			if (position_.emplace(id, position_.size()).second) {
				unique_.push_back(id);
			} else if (reported.insert(id).second) {
				add(pb::CONFLICT_REASON_DUPLICATE_DEVICE, id,
				    id + " appears more than once in the request");
			}
		}
	}

	// Interrupts and stream IDs of devices other VMs hold, so each requested device costs a
	// look-up per interrupt rather than a scan of every held device.
	void indexHeld()
	{
		for (const auto &[id, device] : in_.held) {
			if (device.vm() == in_.vm)
				continue;
			for (const auto &irq : device.interrupts())
				interrupts_[interruptKey(irq)].push_back(&device);
			for (const auto &sid : device.stream_ids())
				streams_[streamKey(sid)].push_back(&device);
		}
	}

	const pb::Device *heldDevice(const std::string &id) const
	{
		auto it = in_.held.find(id);
		return it == in_.held.end() ? nullptr : &it->second;
	}

	void checkDevice(const std::string &id)
	{
		auto it = in_.devices.find(id);
		if (it == in_.devices.end()) {
			add(pb::CONFLICT_REASON_UNKNOWN_DEVICE, id, "no device " + id + " on this host");
			return;
		}
		const pb::Device &device = it->second;
		pb::PolicyVerdict verdict = policy_.evaluate(device);
		checkPolicy(device, verdict);
		checkHolder(device);
		checkGroup(device);
		checkIommu(device, verdict);
		checkSharing(device);
	}

	void checkPolicy(const pb::Device &device, const pb::PolicyVerdict &verdict)
	{
		if (!verdict.allowed()) {
			add(pb::CONFLICT_REASON_POLICY_DENIED, device.id(), verdict.reason());
			return;
		}
		bool vmOk = verdict.allowed_vms().empty();
		for (const auto &vm : verdict.allowed_vms())
			vmOk = vmOk || vm == in_.vm;
		if (!vmOk)
			add(pb::CONFLICT_REASON_VM_NOT_ALLOWED, device.id(),
			    "rule \"" + verdict.rule() + "\" allows " + device.id() + " only for " +
				    quoteList(verdict.allowed_vms()) + ", not for \"" + in_.vm + "\"");
	}

	void checkHolder(const pb::Device &device)
	{
		const std::string &id = device.id();
		const pb::Device *held = heldDevice(id);
		if (held && held->vm() != in_.vm) {
			std::string next = held->state() == pb::DEVICE_STATE_QUARANTINED
						   ? "release it first"
						   : "deassign it there first";
			add(pb::CONFLICT_REASON_ASSIGNED_TO_OTHER_VM, id,
			    id + " is " + heldPhrase(*held) + "; " + next, "", held->vm());
			return;
		}
		if (held) {
			switch (held->state()) {
			case pb::DEVICE_STATE_QUARANTINED:
				add(pb::CONFLICT_REASON_DEVICE_BUSY, id,
				    id + " is quarantined after " + in_.vm + "; release it first");
				break;
			case pb::DEVICE_STATE_FAILED:
				add(pb::CONFLICT_REASON_DEVICE_BUSY, id,
				    id + " failed while assigned to " + in_.vm + "; deassign it first");
				break;
			default:
				add(pb::CONFLICT_REASON_DEVICE_BUSY, id,
				    id + " is already assigned to " + in_.vm + "; deassign it first");
				break;
			}
			return;
		}
		if (device.state() == pb::DEVICE_STATE_FAILED)
			add(pb::CONFLICT_REASON_DEVICE_BUSY, id,
			    id + " is in the failed state; deassign it first");
	}

	// Obstacles of a group, relative to this request and VM; computed once per group.
	const std::vector<GroupObstacle> &groupObstacles(const pb::IommuGroup &group)
	{
		auto [it, fresh] = groups_.try_emplace(group.number());
		std::vector<GroupObstacle> &obstacles = it->second;
		if (!fresh)
			return obstacles;
		for (const std::string &raw : group.members()) {
			std::string member = memberId(raw);
			if (const pb::Device *held = heldDevice(member)) {
				if (held->vm() != in_.vm) {
					std::string why =
						"which is " + heldPhrase(*held) + ": a group goes to one VM";
					obstacles.push_back({ pb::CONFLICT_REASON_IOMMU_GROUP_SPLIT, member,
							      held->vm(), why });
				}
				continue;
			}
			if (position_.count(member))
				continue; // requested: it will be bound to VFIO with the rest
			auto dev = in_.devices.find(member);
			if (dev == in_.devices.end()) {
				std::string why =
					"which the broker cannot find, so the group cannot be checked";
				obstacles.push_back({ pb::CONFLICT_REASON_UNKNOWN_DEVICE, member, "", why });
				continue;
			}
			const std::string &driver = dev->second.driver();
			if (!device::driverKeepsGroupViable(driver)) {
				std::string why = "which is bound to the host driver " + driver +
						  ": request it too (the broker binds only requested "
						  "devices) or unbind it";
				obstacles.push_back(
					{ pb::CONFLICT_REASON_IOMMU_GROUP_NOT_VIABLE, member, "", why });
			}
		}
		return obstacles;
	}

	void checkGroup(const pb::Device &device)
	{
		if (isSimulated(device) || !device.has_iommu_group() || device.iommu_group().number() < 0)
			return;
		const pb::IommuGroup &group = device.iommu_group();
		for (const GroupObstacle &o : groupObstacles(group)) {
			if (o.member == device.id())
				continue;
			add(o.reason, device.id(),
			    device.id() + " is in IOMMU group " + std::to_string(group.number()) + " with " +
				    o.member + ", " + o.why,
			    o.member, o.otherVm);
		}
	}

	void checkIommu(const pb::Device &device, const pb::PolicyVerdict &verdict)
	{
		const std::string &id = device.id();
		const bool identity = in_.options.identity_mapping();
		if (identity && verdict.allowed() && !verdict.allow_identity_mapping())
			add(pb::CONFLICT_REASON_IDENTITY_NOT_ALLOWED, id,
			    "rule \"" + verdict.rule() + "\" does not allow identity mapping for " + id +
				    " (allow_identity_mapping)");
		if (isSimulated(device) || hasIommu(device))
			return;
		// Xen's non-DMA class: nothing to confine. Only a DT device may claim it, and never
		// one wired to an IOMMU ("iommus" in its node).
		const bool dtDevice = device.kind() == pb::DEVICE_KIND_PLATFORM ||
				      device.kind() == pb::DEVICE_KIND_AMBA;
		if (verdict.allowed() && verdict.no_dma() && dtDevice && device.stream_ids().empty())
			return;
		std::vector<std::string> missing;
		if (!in_.options.force_no_iommu())
			missing.push_back("the request's force_no_iommu");
		if (!identity)
			missing.push_back("the request's identity_mapping");
		if (!verdict.allow_no_iommu())
			missing.push_back(verdict.allowed()
						  ? "allow_no_iommu in rule \"" + verdict.rule() + "\""
						  : "a policy rule with allow_no_iommu");
		if (missing.empty())
			return;
		std::string what =
			device.has_iommu_group() && device.iommu_group().no_iommu()
				? " is in no-IOMMU group " + std::to_string(device.iommu_group().number())
				: " has no IOMMU group";
		std::string list;
		for (size_t i = 0; i < missing.size(); i++)
			list += (i ? ", " : "") + missing[i];
		std::string noDma;
		if (verdict.allowed() && verdict.no_dma())
			noDma = dtDevice ? " (rule \"" + verdict.rule() +
						   "\" says no_dma, but its device-tree node has iommus: it does DMA)"
					 : " (rule \"" + verdict.rule() +
						   "\" says no_dma, which only a device-tree device may claim)";
		add(pb::CONFLICT_REASON_NO_IOMMU, id,
		    id + what + ": nothing confines its DMA; it needs force_no_iommu, identity mapping " +
			    "and a rule allowing no-IOMMU, and lacks " + list + noDma);
	}

	// Each device of `others` (held by other VMs, sorted by id) but `id` itself: a conflict
	// naming it while there is room, then only counted.
	template <typename Describe>
	void addShared(const std::string &id, pb::ConflictReason reason,
		       const std::vector<const pb::Device *> &others, Describe describe)
	{
		auto byId = [](const pb::Device *d, const std::string &key) {
			return d->id() < key;
		};
		for (size_t i = 0; i < others.size(); i++) {
			const pb::Device *other = others[i];
			if (other->id() == id)
				continue;
			if (!roomFor(id, reason)) {
				// Count the rest without visiting them; `id` is among them at most once.
				size_t rest = others.size() - i - 1;
				auto self = std::lower_bound(others.begin() + i + 1, others.end(), id, byId);
				if (self != others.end() && (*self)->id() == id)
					rest--;
				unnamed_[{ id, reason }] += rest;
				return;
			}
			add(reason, id, describe(*other), other->id(), other->vm());
		}
	}

	void checkSharing(const pb::Device &device)
	{
		const std::string &id = device.id();
		for (const auto &irq : device.interrupts()) {
			auto it = interrupts_.find(interruptKey(irq));
			if (it == interrupts_.end())
				continue;
			addShared(id, pb::CONFLICT_REASON_SHARED_INTERRUPT, it->second,
				  [&](const pb::Device &other) {
					  return id + " shares interrupt " + interruptText(irq) + " with " +
						 other.id() + ", which is " + heldPhrase(other) +
						 ": an interrupt line goes to one VM";
				  });
		}
		for (const auto &sid : device.stream_ids()) {
			auto it = streams_.find(streamKey(sid));
			if (it == streams_.end())
				continue;
			addShared(id, pb::CONFLICT_REASON_SHARED_STREAM_ID, it->second,
				  [&](const pb::Device &other) {
					  return id + " shares stream ID " + hex(sid.stream_id()) +
						 " of IOMMU " + sid.iommu() + " with " + other.id() +
						 ", which is " + heldPhrase(other) +
						 ": the IOMMU cannot tell their DMA apart";
				  });
		}
	}

	// With identity mapping host MMIO addresses are guest addresses, so the VM's identity-mapped
	// devices must not overlap. Sorted by start, each range only meets the ranges starting
	// before its end: O(n log n) plus the overlaps found.
	void checkMmioOverlaps()
	{
		struct Range {
			uint64_t start;
			uint64_t end; // exclusive, saturated
			const pb::Device *device;
			bool requested;
		};
		std::vector<Range> ranges;
		auto addRanges = [&ranges](const pb::Device &device, bool requested) {
			for (const auto &r : device.mmio()) {
				if (r.size() == 0)
					continue;
				uint64_t end = r.address() + r.size();
				if (end < r.address())
					end = UINT64_MAX;
				ranges.push_back({ r.address(), end, &device, requested });
			}
		};
		for (const std::string &id : unique_) {
			auto it = in_.devices.find(id);
			if (it != in_.devices.end())
				addRanges(it->second, true);
		}
		for (const auto &[id, device] : in_.held) {
			if (device.vm() != in_.vm || position_.count(id))
				continue;
			auto opts = in_.heldOptions.find(id);
			if (opts != in_.heldOptions.end() && opts->second.identity_mapping())
				addRanges(device, false);
		}
		std::sort(ranges.begin(), ranges.end(), [](const Range &a, const Range &b) {
			return std::tie(a.start, a.end) < std::tie(b.start, b.end);
		});
		for (size_t i = 0; i < ranges.size(); i++) {
			for (size_t j = i + 1; j < ranges.size() && ranges[j].start < ranges[i].end; j++) {
				const Range &a = ranges[i];
				const Range &b = ranges[j];
				if (a.device == b.device || (!a.requested && !b.requested))
					continue;
				if (a.requested)
					overlap(a.device->id(), a.start, a.end, b.device->id(), b.start,
						b.end, b.requested);
				if (b.requested)
					overlap(b.device->id(), b.start, b.end, a.device->id(), a.start,
						a.end, a.requested);
			}
		}
	}

	void overlap(const std::string &id, uint64_t start, uint64_t end, const std::string &other,
		     uint64_t otherStart, uint64_t otherEnd, bool otherRequested)
	{
		if (!roomFor(id, pb::CONFLICT_REASON_MMIO_OVERLAP))
			return;
		std::string whose =
			otherRequested ? "requested too" : "which " + in_.vm + " holds identity-mapped";
		add(pb::CONFLICT_REASON_MMIO_OVERLAP, id,
		    id + " MMIO " + hex(start) + "-" + hex(end - 1) + " overlaps " + other + " " +
			    hex(otherStart) + "-" + hex(otherEnd - 1) + " (" + whose +
			    "): with identity mapping host addresses are guest addresses in " + in_.vm,
		    other, otherRequested ? "" : in_.vm);
	}

	std::vector<pb::Conflict> sorted()
	{
		auto key = [this](const pb::Conflict &c) {
			auto it = position_.find(c.device_id());
			size_t pos = it == position_.end() ? SIZE_MAX : it->second;
			// A count of unnamed others (no other device) follows the named ones.
			bool count = c.other_device_id().empty();
			return std::tuple<size_t, int, bool, const std::string &, const std::string &,
					  const std::string &>(pos, c.reason(), count, c.other_device_id(),
							       c.other_vm(), c.message());
		};
		std::sort(out_.begin(), out_.end(),
			  [&key](const pb::Conflict &a, const pb::Conflict &b) { return key(a) < key(b); });
		auto same = [](const pb::Conflict &a, const pb::Conflict &b) {
			return a.device_id() == b.device_id() && a.reason() == b.reason() &&
			       a.other_device_id() == b.other_device_id() && a.other_vm() == b.other_vm() &&
			       a.message() == b.message();
		};
		out_.erase(std::unique(out_.begin(), out_.end(), same), out_.end());
		return std::move(out_);
	}

	const ConflictInput &in_;
	Policy emptyPolicy_;
	const Policy &policy_;
	std::vector<pb::Conflict> out_;
	std::unordered_map<std::string, size_t> position_; // first index in the request
	std::vector<std::string> unique_;		   // the request without repeats, in order
	std::unordered_map<std::string, std::vector<const pb::Device *>> interrupts_;
	std::unordered_map<std::string, std::vector<const pb::Device *>> streams_;
	std::unordered_map<int32_t, std::vector<GroupObstacle>> groups_;
	std::map<std::pair<std::string, pb::ConflictReason>, size_t> named_;
	std::map<std::pair<std::string, pb::ConflictReason>, size_t> unnamed_;
};

} // namespace

std::vector<pb::Conflict> checkAssignment(const ConflictInput &input)
{
	return Checks(input).run();
}

} // namespace vfio_broker::control
