//! Impossible travel: two logins further apart than anyone can travel in the time between them.
//!
//! Locations are as precise as the country data: a country's approximate centre (built in for the
//! countries below). So this signal sees a session in Tokyo followed ten minutes later by a login
//! from Seoul or New York, not Tokyo followed by Osaka; a jump under [`MIN_DISTANCE_KM`] is never
//! called impossible, because two centres can be that far from the real places.

/// Faster than this between two logins is impossible (ARCHITECTURE section 8).
pub const MAX_SPEED_KMH: f64 = 500.0;
/// Below this distance country centres are too coarse to judge.
pub const MIN_DISTANCE_KM: f64 = 300.0;

/// Approximate centres (latitude, longitude) of the countries shoppers are most likely to be seen
/// from: Japan, its neighbours, and the usual sources of attacks. A country not listed has no
/// location, so the signal stays false for it.
const CENTRES: &[(&str, f64, f64)] = &[
    ("JP", 36.2, 138.3),
    ("KR", 36.5, 127.9),
    ("KP", 40.3, 127.5),
    ("CN", 35.9, 104.2),
    ("TW", 23.7, 121.0),
    ("HK", 22.3, 114.2),
    ("MO", 22.2, 113.5),
    ("MN", 46.9, 103.8),
    ("RU", 61.5, 105.3),
    ("PH", 12.9, 121.8),
    ("VN", 14.1, 108.3),
    ("TH", 15.9, 101.0),
    ("MY", 4.2, 102.0),
    ("SG", 1.35, 103.8),
    ("ID", -0.8, 113.9),
    ("KH", 12.6, 105.0),
    ("LA", 19.9, 102.5),
    ("MM", 21.9, 96.0),
    ("IN", 20.6, 79.0),
    ("BD", 23.7, 90.4),
    ("PK", 30.4, 69.3),
    ("NP", 28.4, 84.1),
    ("LK", 7.9, 80.8),
    ("AU", -25.3, 133.8),
    ("NZ", -40.9, 174.9),
    ("US", 37.1, -95.7),
    ("CA", 56.1, -106.3),
    ("MX", 23.6, -102.6),
    ("BR", -14.2, -51.9),
    ("AR", -38.4, -63.6),
    ("CL", -35.7, -71.5),
    ("PE", -9.2, -75.0),
    ("CO", 4.6, -74.3),
    ("GB", 55.4, -3.4),
    ("IE", 53.4, -8.2),
    ("FR", 46.2, 2.2),
    ("DE", 51.2, 10.5),
    ("NL", 52.1, 5.3),
    ("BE", 50.5, 4.5),
    ("LU", 49.8, 6.1),
    ("CH", 46.8, 8.2),
    ("AT", 47.5, 14.6),
    ("IT", 41.9, 12.6),
    ("ES", 40.5, -3.7),
    ("PT", 39.4, -8.2),
    ("SE", 60.1, 18.6),
    ("NO", 60.5, 8.5),
    ("FI", 61.9, 25.7),
    ("DK", 56.3, 9.5),
    ("PL", 51.9, 19.1),
    ("CZ", 49.8, 15.5),
    ("HU", 47.2, 19.5),
    ("RO", 45.9, 25.0),
    ("BG", 42.7, 25.5),
    ("GR", 39.1, 21.8),
    ("UA", 48.4, 31.2),
    ("BY", 53.7, 28.0),
    ("TR", 39.0, 35.2),
    ("IL", 31.0, 34.9),
    ("AE", 23.4, 53.8),
    ("SA", 23.9, 45.1),
    ("IR", 32.4, 53.7),
    ("EG", 26.8, 30.8),
    ("NG", 9.1, 8.7),
    ("KE", -0.02, 37.9),
    ("ZA", -30.6, 22.9),
];

/// A country's approximate centre.
pub fn centre(country: &str) -> Option<(f64, f64)> {
    CENTRES.iter().find(|(c, _, _)| *c == country).map(|&(_, lat, lon)| (lat, lon))
}

/// Great-circle distance in kilometres.
pub fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lon1, lat2, lon2) = (a.0.to_radians(), a.1.to_radians(), b.0.to_radians(), b.1.to_radians());
    let h = ((lat2 - lat1) / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().asin()
}

/// Whether going from `from` (seen at `from_ms`) to `to` (now, `now_ms`) needs more than
/// [`MAX_SPEED_KMH`].
pub fn impossible(from: &str, from_ms: i64, to: &str, now_ms: i64) -> bool {
    let (Some(a), Some(b)) = (centre(from), centre(to)) else { return false };
    let km = distance_km(a, b);
    if km < MIN_DISTANCE_KM {
        return false;
    }
    // At least a minute apart, so that two logins in the same instant are not infinitely fast.
    let hours = ((now_ms - from_ms).max(60_000)) as f64 / 3_600_000.0;
    km / hours > MAX_SPEED_KMH
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: i64 = 3_600_000;

    #[test]
    fn distances_are_about_right() {
        let tokyo_to_new_york = distance_km(centre("JP").unwrap(), centre("US").unwrap());
        assert!((9_000.0..11_500.0).contains(&tokyo_to_new_york), "{tokyo_to_new_york}");
        assert!(distance_km(centre("JP").unwrap(), centre("JP").unwrap()) < 1e-6);
    }

    #[test]
    fn a_jump_faster_than_an_airliner_allows_is_impossible() {
        // Japan to the United States in ten minutes, or in ten hours.
        assert!(impossible("JP", 0, "US", HOUR / 6));
        assert!(!impossible("JP", 0, "US", 30 * HOUR));
        // Japan to Korea (about 900 km between centres) in an hour is impossible; in three, possible.
        assert!(impossible("JP", 0, "KR", HOUR));
        assert!(!impossible("JP", 0, "KR", 3 * HOUR));
        // The same country, a neighbour too close to judge, or a country without a centre never is.
        assert!(!impossible("JP", 0, "JP", 1));
        assert!(!impossible("HK", 0, "MO", 1));
        assert!(!impossible("JP", 0, "XX", 1));
    }
}
