"""A small application module. Nothing in it knows about tracing."""

from dataclasses import dataclass


class OutOfStock(Exception):
    pass


@dataclass
class Item:
    sku: str
    price: float


class Cart:
    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.items: list[Item] = []

    def add(self, item: Item, quantity: int = 1) -> int:
        if item.sku == "unicorn":
            raise OutOfStock(f"no {item.sku} left")
        self.items.extend([item] * quantity)
        return len(self.items)

    def total(self) -> float:
        return round(sum(i.price for i in self.items), 2)


def checkout(owner: str, card_token: str) -> float:
    cart = Cart(owner)
    cart.add(Item("book", 12.5), quantity=2)
    try:
        cart.add(Item("unicorn", 1e6))
    except OutOfStock:
        pass
    return cart.total()
