//! Applies [`Desired`] to the live `flannel.1` as a diff (restarts converge
//! without duplicates, stale entries are removed).

use std::collections::BTreeSet;

use ferry_netlink::Netlink;
use ferry_netlink::link::MacAddress;
use ferry_netlink::route::Route;

use crate::model::{Cidr, Desired, FdbEntry, Mac, NeighEntry, RouteEntry, diff};

/// Reconciles routes, neighbours and FDB entries on device `index`.
pub async fn apply(nl: &Netlink, index: u32, want: &Desired) -> ferry_netlink::error::Result<()> {
    let live_routes: BTreeSet<RouteEntry> = nl
        .routes()
        .await?
        .into_iter()
        .filter(|r| r.output_interface == Some(index))
        .filter_map(|r| {
            Some(RouteEntry {
                dst: Cidr {
                    network: r.destination,
                    prefix_len: r.prefix_len,
                },
                via: r.gateway?,
            })
        })
        .collect();
    let live_neigh: BTreeSet<NeighEntry> = nl
        .neighbours(Some(index))
        .await?
        .into_iter()
        .filter(|n| n.permanent)
        .filter_map(|n| {
            Some(NeighEntry {
                ip: n.destination,
                mac: Mac(n.mac?.0),
            })
        })
        .collect();
    let live_fdb: BTreeSet<FdbEntry> = nl
        .fdb_entries(index)
        .await?
        .into_iter()
        .filter_map(|f| {
            Some(FdbEntry {
                mac: Mac(f.mac.0),
                dst: f.destination?,
            })
        })
        .collect();

    let routes = diff(&live_routes, &want.routes);
    let neigh = diff(&live_neigh, &want.neighbours);
    let fdb = diff(&live_fdb, &want.fdb);

    for r in &routes.remove {
        nl.delete_route(
            &Route::to(r.dst.network, r.dst.prefix_len)
                .via(r.via)
                .dev(index),
        )
        .await?;
    }
    for n in &neigh.remove {
        nl.delete_neighbour(index, n.ip).await?;
    }
    for f in &fdb.remove {
        nl.delete_fdb(index, MacAddress(f.mac.0), Some(f.dst))
            .await?;
    }
    // FDB and neighbour first, so the route never points at an unresolved hop.
    for f in &fdb.add {
        nl.replace_fdb(index, MacAddress(f.mac.0), f.dst).await?;
    }
    for n in &neigh.add {
        nl.replace_neighbour(index, n.ip, MacAddress(n.mac.0))
            .await?;
    }
    for r in &routes.add {
        nl.replace_route(
            &Route::to(r.dst.network, r.dst.prefix_len)
                .via(r.via)
                .dev(index)
                .onlink(),
        )
        .await?;
    }
    Ok(())
}
