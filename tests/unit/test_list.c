/*
 * test_list.c: list.h, the intrusive list: order of push_front/push_back,
 * removal from the head, the middle and the tail, removal twice, walking while
 * removing, and moving a whole list away while new nodes arrive.
 */
#include "list.h"
#include "tap.h"

struct item {
    int v;
    struct list link;
};

/* The values on `head`, in order, as a string of digits ("" when empty). */
static const char *order(const struct list *head)
{
    static char s[64];
    size_t n = 0;
    const struct list *p;
    for (p = head->next; p != head && n + 1 < sizeof s; p = p->next)
        s[n++] = (char)('0' + list_entry(p, const struct item, link)->v);
    s[n] = '\0';
    return s;
}

/* Whether every node's prev is the node before it, both ways round. */
static int consistent(const struct list *head)
{
    const struct list *p = head;
    do {
        if (p->next->prev != p || p->prev->next != p)
            return 0;
        p = p->next;
    } while (p != head);
    return 1;
}

int main(void)
{
    struct list head, other, *pos, *tmp;
    struct item it[6];

    for (int i = 0; i < 6; i++) {
        it[i].v = i;
        list_init(&it[i].link);
    }
    list_init(&head);
    ok(list_empty(&head) && list_first(&head) == NULL && list_last(&head) == NULL,
       "a new head is empty: no first, no last");
    ok(!list_linked(&it[0].link), "a list_init()ed node is not linked");

    list_push_back(&head, &it[1].link);
    list_push_back(&head, &it[2].link);
    list_push_front(&head, &it[0].link);
    list_push_back(&head, &it[3].link);
    is_str(order(&head), "0123", "push_front goes first, push_back last");
    ok(consistent(&head), "links agree both ways after pushes");
    ok(list_first(&head) == &it[0].link && list_last(&head) == &it[3].link,
       "first and last are the ends");
    ok(list_entry(list_first(&head), struct item, link) == &it[0],
       "list_entry finds the object from its node");
    ok(list_linked(&it[2].link), "a pushed node is linked");

    list_remove(&it[2].link);
    is_str(order(&head), "013", "removing a middle node keeps the rest in order");
    ok(!list_linked(&it[2].link), "a removed node is self-linked");
    list_remove(&it[2].link);
    is_str(order(&head), "013", "removing it again is a no-op");
    list_remove(&it[0].link);
    is_str(order(&head), "13", "removing the first node");
    list_remove(&it[3].link);
    is_str(order(&head), "1", "removing the last node");
    ok(consistent(&head), "links agree both ways after removals");
    list_remove(&it[1].link);
    ok(list_empty(&head) && consistent(&head), "removing the only node empties the head");

    for (int i = 0; i < 6; i++)
        list_push_back(&head, &it[i].link);
    list_for_each_safe(pos, tmp, &head) {
        if (list_entry(pos, struct item, link)->v % 2)
            list_remove(pos);
    }
    is_str(order(&head), "024", "walking with list_for_each_safe may remove the current node");
    ok(consistent(&head), "links agree both ways after removing while walking");

    list_move_all(&other, &head);
    ok(list_empty(&head), "list_move_all leaves the source empty");
    is_str(order(&other), "024", "and the destination holds its nodes, in order");
    ok(consistent(&other) && consistent(&head), "both heads are consistent after the move");
    list_push_front(&head, &it[5].link);
    is_str(order(&head), "5", "the source takes new nodes after the move");
    is_str(order(&other), "024", "without touching the moved ones");

    while ((pos = list_first(&other)))
        list_remove(pos);
    list_remove(&it[5].link);
    list_move_all(&other, &head);
    ok(list_empty(&other) && list_empty(&head), "moving an empty list leaves both empty");
    return tap_done();
}
