import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader
from monai.engines import SupervisedTrainer

from pipeline.mitigation import BatchContextHandler, GroupDROLoss, GroupReweightedLoss


def _toy_items(n=12):
    generator = torch.Generator().manual_seed(0)
    items = []
    for i in range(n):
        label, bias = i % 2, (i // 2) % 2
        image = torch.randn(1, 4, 4, generator=generator) + label
        items.append({"image": image, "label": label, "bias": bias})
    return items


def _trainer(loss, handlers):
    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    return SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=DataLoader(_toy_items(), batch_size=4, shuffle=False),
        network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=0.1),
        loss_function=loss,
        train_handlers=handlers,
    )


def test_handler_feeds_each_batch_to_the_loss_in_a_supervised_trainer():
    loss = GroupDROLoss(eta=1.0)
    seen = []
    trainer = _trainer(loss, [BatchContextHandler(loss)])
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(loss._groups.tolist()))
    trainer.run()
    assert trainer.state.iteration == 3
    expected = [[2 * (i % 2) + (i // 2) % 2 for i in range(s, s + 4)] for s in (0, 4, 8)]
    assert seen == expected
    assert not torch.allclose(loss.group_weights, torch.full((4,), 0.25))


def test_trainer_without_handler_reports_missing_groups():
    loss = GroupReweightedLoss()
    trainer = _trainer(loss, [])
    with pytest.raises(RuntimeError, match="BatchContextHandler"):
        trainer.run()


class _CountingLoss(GroupReweightedLoss):
    calls = 0

    def set_batch(self, batch):
        self.calls += 1
        super().set_batch(batch)


def test_handler_requires_set_batch_and_attaches_once():
    with pytest.raises(ValueError, match="set_batch"):
        BatchContextHandler(torch.nn.CrossEntropyLoss())
    loss = _CountingLoss()
    handler = BatchContextHandler(loss)
    trainer = _trainer(loss, [handler])
    handler.attach(trainer)
    trainer.run()
    assert loss.calls == trainer.state.iteration == 3
