// SPDX-License-Identifier: Apache-2.0
// Launch mode: places a VM's platform devices in a guest overlay and writes the crosvm arguments.
#include "control/launch_config.h"

#include <optional>

#include "common/path_util.h"
#include "platform/guest_overlay.h"
#include "platform/host_dt.h"
#include "platform/sim_platform_dt.h"

namespace vfio_broker::control {

namespace {

bool hasDtNode(const pb::Device &device)
{
	switch (device.kind()) {
	case pb::DEVICE_KIND_PLATFORM:
	case pb::DEVICE_KIND_AMBA:
		return true;
	case pb::DEVICE_KIND_SIMULATED:
		return !device.platform().dt_path().empty();
	default:
		return false;
	}
}

// crosvm splits --vfio and --device-tree-overlay values at commas (src/crosvm/cmdline.rs parses
// them as key=value lists), so a comma in a path would turn into an option.
Status checkArgumentPath(const std::string &what, const std::string &path)
{
	if (path.empty())
		return makeError(EINVAL, "%s is empty", what.c_str());
	if (path.size() > kMaxOverlayPathLength)
		return makeError(EINVAL, "%s is longer than %zu characters", what.c_str(), kMaxOverlayPathLength);
	for (char c : path)
		if (c == ',' || c == '\0' || c == '\n')
			return makeError(EINVAL, "%s \"%s\" holds a character crosvm's option parser would split at",
					 what.c_str(), path.c_str());
	return {};
}

} // namespace

Result<pb::GetLaunchConfigResponse> buildLaunchConfig(const InventoryOptions &opts,
						      const pb::GetLaunchConfigRequest &request,
						      const std::vector<LaunchDevice> &devices)
{
	if (request.vmm() != pb::VMM_UNSPECIFIED && request.vmm() != pb::VMM_CROSVM)
		return makeError(EINVAL, "vmm %d is not supported (VMM_CROSVM is)", static_cast<int>(request.vmm()));
	if (request.first_guest_spi() > kMaxGuestSpi)
		return makeError(EINVAL, "first_guest_spi %u is past the last GIC SPI (%u)", request.first_guest_spi(),
				 kMaxGuestSpi);
	if (request.guest_mmio_base() + request.guest_mmio_size() < request.guest_mmio_base())
		return makeError(EINVAL, "the guest MMIO window wraps around the address space");
	if (request.dma_pool_base() + request.dma_pool_size() < request.dma_pool_base())
		return makeError(EINVAL, "the DMA pool wraps around the address space");
	std::string overlayPath = request.overlay_path().empty() ? request.vm() + ".dtbo" : request.overlay_path();
	if (Status s = checkArgumentPath("overlay_path", overlayPath); !s)
		return s.takeError();

	pb::GetLaunchConfigResponse resp;
	resp.set_overlay_path(overlayPath);
	std::optional<Result<platform::HostDeviceTree>> hostTree;
	std::optional<Result<platform::HostDeviceTree>> simTree;
	std::vector<platform::GuestDeviceRequest> requests;
	std::vector<const LaunchDevice *> placed;
	bool relocated = false;
	for (const LaunchDevice &d : devices) {
		const pb::Device &dev = d.device;
		if (!hasDtNode(dev)) {
			resp.add_skipped(dev.id() + ": not a device-tree device (its VMM gets it over vfio-user)");
			continue;
		}
		platform::GuestDeviceRequest req;
		if (dev.kind() == pb::DEVICE_KIND_SIMULATED) {
			if (!simTree)
				simTree.emplace(platform::simPlatformHostTree());
			if (!*simTree)
				return withContext(Error(simTree->error()), dev.id());
			auto node = (*simTree)->node(dev.platform().dt_path());
			if (!node)
				return withContext(node.takeError(), dev.id());
			req.host = std::move(*node);
			req.sysfsPath = platform::platformSysfsPath(req.host);
			req.dma = false; // lives in the device daemon: no host DMA
		} else {
			if (!hostTree) {
				hostTree.emplace(platform::HostDeviceTree::load(path::stripTrailingSlashes(opts.sysfsRoot) +
										"/firmware/fdt"));
			}
			if (!*hostTree)
				return withContext(Error((*hostTree).error()), "reading the host device tree");
			auto node = (*hostTree)->node(dev.platform().dt_path());
			if (!node)
				return withContext(node.takeError(), dev.id());
			req.host = std::move(*node);
			req.sysfsPath = deviceDaemonArgument(dev.id());
			// A node with "iommus" does DMA whatever the policy says.
			req.dma = !d.noDma || !req.host.iommus.empty();
		}
		if (Status s = checkArgumentPath(dev.id() + " sysfs path", req.sysfsPath); !s)
			return s.takeError();
		req.identity = d.options.identity_mapping();
		relocated = relocated || !req.identity;
		requests.push_back(std::move(req));
		placed.push_back(&d);
	}
	if (requests.empty())
		return makeError(ENOENT, "VM \"%s\" holds no device-tree device to place in its guest",
				 request.vm().c_str());
	if (relocated && request.guest_mmio_size() == 0)
		return makeError(EINVAL, "a device is not identity-mapped, so the guest needs an MMIO window for it "
				 "(guest_mmio_base and guest_mmio_size)");

	platform::OverlayOptions options;
	options.guestMmioBase = request.guest_mmio_base();
	options.guestMmioSize = request.guest_mmio_size();
	options.firstGuestSpi = request.first_guest_spi();
	options.dmaPoolBase = request.dma_pool_base();
	options.dmaPoolSize = request.dma_pool_size();
	auto overlay = platform::buildOverlay(requests, options);
	if (!overlay)
		return withContext(overlay.takeError(), "building the guest overlay for " + request.vm());
	if (overlay->placements.size() != requests.size())
		return makeError(EIO, "the overlay builder placed %zu of %zu devices", overlay->placements.size(),
				 requests.size());

	for (const std::string &arg : platform::crosvmArguments(requests, overlayPath))
		resp.add_args(arg);
	resp.set_overlay(std::string(overlay->dtbo.begin(), overlay->dtbo.end()));
	for (size_t i = 0; i < requests.size(); i++) {
		const platform::GuestPlacement &p = overlay->placements[i];
		pb::GuestPlacement *out = resp.add_placements();
		out->set_device_id(placed[i]->device.id());
		out->set_label(p.label);
		out->set_node_name(p.nodeName);
		for (const platform::DtRegion &r : p.guestReg) {
			pb::MmioRange *range = out->add_guest_mmio();
			range->set_address(r.address);
			range->set_size(r.size);
		}
		for (uint32_t spi : p.guestSpis)
			out->add_guest_spis(spi);
		for (uint32_t flags : p.guestIrqFlags)
			out->add_guest_irq_flags(flags);
		out->set_identity_mapping(requests[i].identity);
	}
	return resp;
}

} // namespace vfio_broker::control
