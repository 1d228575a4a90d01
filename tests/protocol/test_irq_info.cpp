// SPDX-License-Identifier: Apache-2.0
// VFIO_USER_DEVICE_GET_IRQ_INFO against the real daemon: sim:edu's interrupt types, and
// out-of-range or undersized requests.
#include "daemon_fixture.h"

using namespace vfio_broker;
using namespace vfio_broker::test;
using vfio_user::IrqInfoPayload;

namespace {

Reply irqInfo(Client &c, uint32_t index, uint32_t argsz = sizeof(IrqInfoPayload))
{
	return exchange(c, Command::DeviceGetIrqInfo, bytesOf(IrqInfoPayload{ argsz, 0, index, 0 }));
}

void requireIrq(Client &c, uint32_t index, uint32_t flags, uint32_t count)
{
	INFO("IRQ index " << index);
	Reply r = irqInfo(c, index);
	REQUIRE(outcome(r) == "ok");
	REQUIRE(r.payload.size() == sizeof(IrqInfoPayload));
	CHECK(r.fds.empty());
	auto info = r.as<IrqInfoPayload>();
	CHECK(info.argsz == sizeof(IrqInfoPayload));
	CHECK(info.index == index);
	CHECK(info.flags == flags);
	CHECK(info.count == count);
}

} // namespace

TEST_CASE("IRQ_INFO reports one INTx line, maskable and automasked", "[irq_info]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	requireIrq(c, VFIO_PCI_INTX_IRQ_INDEX,
		   VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED, 1);
}

TEST_CASE("IRQ_INFO reports one MSI vector", "[irq_info]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	requireIrq(c, VFIO_PCI_MSI_IRQ_INDEX, VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE, 1);
}

TEST_CASE("IRQ_INFO reports no MSI-X or error interrupts and one request interrupt", "[irq_info]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	requireIrq(c, VFIO_PCI_MSIX_IRQ_INDEX, VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE, 0);
	requireIrq(c, VFIO_PCI_ERR_IRQ_INDEX, VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE, 0);
	requireIrq(c, VFIO_PCI_REQ_IRQ_INDEX, VFIO_IRQ_INFO_EVENTFD | VFIO_IRQ_INFO_NORESIZE, 1);
}

TEST_CASE("IRQ_INFO with a larger argsz is answered with the 16 bytes the reply needs", "[irq_info]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	Reply r = irqInfo(c, VFIO_PCI_MSI_IRQ_INDEX, 1024);
	REQUIRE(outcome(r) == "ok");
	REQUIRE(r.payload.size() == sizeof(IrqInfoPayload));
	CHECK(r.as<IrqInfoPayload>().argsz == sizeof(IrqInfoPayload));
	CHECK(r.as<IrqInfoPayload>().count == 1);
}

TEST_CASE("IRQ_INFO of an IRQ index past the last is refused with EINVAL", "[irq_info]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	for (uint32_t index : { 5u, 6u, 0xffffffffu }) {
		INFO("IRQ index " << index);
		CHECK(outcome(irqInfo(c, index)) == "EINVAL");
		requireServes(c);
	}
}

TEST_CASE("IRQ_INFO with a short payload is refused with EINVAL", "[irq_info]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	for (size_t len : { 0, 8, 15 }) {
		INFO(len << "-byte payload");
		std::vector<uint8_t> payload = bytesOf(IrqInfoPayload{ sizeof(IrqInfoPayload), 0, 0, 0 });
		payload.resize(len);
		CHECK(outcome(exchange(c, Command::DeviceGetIrqInfo, payload)) == "EINVAL");
		requireServes(c);
	}
}

TEST_CASE("IRQ_INFO with argsz below 16 is refused with EINVAL", "[irq_info]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	for (uint32_t argsz : { 0u, 15u }) {
		INFO("argsz " << argsz);
		CHECK(outcome(irqInfo(c, VFIO_PCI_INTX_IRQ_INDEX, argsz)) == "EINVAL");
		requireServes(c);
	}
}

TEST_CASE("IRQ_INFO with a file descriptor attached is refused with EINVAL", "[irq_info]")
{
	Daemon d;
	Client c = d.connectNegotiated();
	UniqueFd efd = makeEventfd();
	int fds[] = { efd.get() };
	CHECK(outcome(exchange(c, Command::DeviceGetIrqInfo,
			       bytesOf(IrqInfoPayload{ sizeof(IrqInfoPayload), 0, 0, 0 }), fds)) == "EINVAL");
	requireServes(c);
}
